import './quietTestMode';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { InvocationContext } from '@azure/functions';
import { LocalHttpHost } from './httpHost';
import { describeError, InvalidInputError } from '../shared/errors';
import { TableClient } from '@azure/data-tables';
import { systemClock } from '../shared/clock';
import { formatIssues } from '../shared/errors';
import { segmentAttribute } from '../shared/config/syncConfig';
import { rowsAccountedFor, runProgress, runSummary, type RunRecord } from '../shared/runs/runRecord';
import { RunStore } from '../shared/runs/runStore';
import { readPreview, runHistory, runHistoryQuerySchema } from '../shared/sync/runHistory';
import { rejectsReportName } from '../shared/runs/runBlobs';
import { consoleLogger, type Logger } from '../shared/log';
import { syncTimer } from '../functions/syncTimer';
import { exportBlobDrop } from '../functions/exportBlobDrop';
import { blobCreatedEvent } from './blobEvents';
import { startAzurite, type AzuriteInstance } from './azurite';
import { BrazeServer } from './brazeServer';
import { LocalFunctionApp, PROJECT_ROOT, readConfigFile, uploadExportDir } from './stack';
import { lookUpUser, userQuerySchema } from '../shared/sync/userLookup';
import { createConnector } from '../shared/sync/connector';

const USAGE = `Usage: npm start -- [options]

Runs the connector once, end to end, without the Functions host: starts Azurite (in memory) and a
Braze-compatible local server unless told otherwise, uploads an export, triggers a sync, and drives
the queue-triggered functions until every run ends.

Options:
  --export-dir DIR     a folder laid out like the export container (default: sample/export)
  --config FILE        the mapping config (default: sample/config.json)
  --trigger KIND       timer | http | blob: which function starts the run (default: timer)
  --force              send every profile in full and rebuild the delivered state
  --dry-run            read, map and diff, send nothing, leave the state alone, and print the
                       preview: what a real run would change in Braze and what it would cost
  --reconcile          compare Braze's segment exports with the export and repair what drifted
                       (with --dry-run: only report the drift); the local Braze server exports
                       the config's segments by their membership attributes
  --json               print one line of JSON as the summary
  --timeout SECONDS    give up waiting after this long (default: 600)
  --runs               list the run history of the storage AzureWebJobsStorage names, newest
                       first (with --destination NAME, --status STATUS, --limit N, --json);
                       starts nothing
  --approve RUN        a run the destination's guard held (status held) sends exactly what it
                       previewed; with AzureWebJobsStorage, where the held run is kept
  --cancel RUN         a held run ends with nothing sent and the delivered state unchanged
  --user ID            where a user stands with a destination (--destination NAME, --by
                       external_id|email|alias): the segments and subscription states Braze holds
                       from the connector, the run that wrote them, an erasure; with
                       AzureWebJobsStorage and the config of that deployment; starts nothing
  --help               this text

Environment:
  AzureWebJobsStorage          use this storage instead of starting Azurite
  BRAZE_REST_ENDPOINT, BRAZE_API_KEY
                               send to this Braze instead of the local server
  EXPORT_CONTAINER             the container the export is uploaded to (default: customer-insights)
  any app setting of the README (BRAZE_RATE_LIMIT_RESERVE_SHARE, …)
Exit code 0 when every row ended delivered, unchanged or rejected with a reason; 3 when a run
was held by the destination's guard (nothing sent: approve or cancel it); 1 otherwise.`;

interface RunnerResult {
  exitCode: number;
  runs: RunRecord[];
}

async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<RunnerResult> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'export-dir': { type: 'string' },
      config: { type: 'string' },
      trigger: { type: 'string', default: 'timer' },
      force: { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
      reconcile: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '600' },
      runs: { type: 'boolean', default: false },
      approve: { type: 'string' },
      cancel: { type: 'string' },
      user: { type: 'string' },
      by: { type: 'string' },
      destination: { type: 'string' },
      status: { type: 'string' },
      limit: { type: 'string', default: '20' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return { exitCode: 0, runs: [] };
  }
  if (values.runs) return listRuns(env, { destination: values.destination, status: values.status, limit: values.limit }, values.json ?? false);
  if (values.user !== undefined) return findUser(env, values.user, { destination: values.destination, by: values.by, config: values.config });
  const decision = values.approve !== undefined ? ('approve' as const) : values.cancel !== undefined ? ('cancel' as const) : undefined;
  if (values.approve !== undefined && values.cancel !== undefined) throw new InvalidInputError('--approve and --cancel exclude each other');
  if (decision && !env.AzureWebJobsStorage)
    throw new InvalidInputError(
      `--${decision} acts on a held run kept in the storage AzureWebJobsStorage names (the in-memory Azurite of a plain npm start is gone when it exits); set it to that storage's connection string`,
    );
  const dryRun = values['dry-run'] ?? false;
  const reconcile = values.reconcile ?? false;
  // A dry run or a reconcile is asked for over HTTP (the timer has no body to carry it).
  const trigger = (dryRun || reconcile) && values.trigger === 'timer' ? 'http' : values.trigger!;
  if (!['timer', 'http', 'blob'].includes(trigger)) throw new InvalidInputError(`--trigger must be timer, http or blob, not "${trigger}"`);
  const exportDir = path.resolve(values['export-dir'] ?? path.join(PROJECT_ROOT, 'sample', 'export'));
  const configFile = path.resolve(values.config ?? path.join(PROJECT_ROOT, 'sample', 'config.json'));
  const config = readConfigFile(configFile);
  const timeoutMs = Number(values.timeout) * 1000;
  const quiet = values.json;
  const log: Logger = quiet
    ? { info: () => undefined, warn: (m) => console.error(m), error: (m) => console.error(m), record: () => undefined }
    : { ...consoleLogger, record: () => undefined };
  const say = (line: string) => {
    if (!quiet) console.log(line);
  };

  let azurite: AzuriteInstance | undefined;
  let braze: BrazeServer | undefined;
  let app: LocalFunctionApp | undefined;
  try {
    const settingsEnv: Record<string, string | undefined> = { ...env };
    if (!env.AzureWebJobsStorage) {
      azurite = await startAzurite();
      settingsEnv.AzureWebJobsStorage = azurite.connectionString;
      say('storage: Azurite (in memory)');
    } else {
      say('storage: AzureWebJobsStorage');
    }
    if (!env.BRAZE_REST_ENDPOINT || !env.BRAZE_API_KEY) {
      const apiKey = `local-${Math.random().toString(36).slice(2)}`;
      // Braze's segments as CI's export asks for them: each defined by its membership attribute.
      const segments = Object.fromEntries(config.destinations.flatMap((d) => d.segments.map((g) => [g.brazeSegmentId, segmentAttribute(g)])));
      braze = new BrazeServer({ apiKey, segments });
      settingsEnv.BRAZE_REST_ENDPOINT = await braze.start();
      settingsEnv.BRAZE_API_KEY = apiKey;
      // The local server's exports are ready in a moment; Braze's take minutes.
      settingsEnv.RECONCILE_POLL_SECONDS ??= '1';
      say(`braze: local server at ${settingsEnv.BRAZE_REST_ENDPOINT}`);
    } else {
      say(`braze: ${env.BRAZE_REST_ENDPOINT}`);
    }
    settingsEnv.EXPORT_CONTAINER ??= 'customer-insights';
    settingsEnv.SYNC_CONFIG_FILE = configFile;

    app = new LocalFunctionApp({ env: settingsEnv, config, log });
    await app.start();
    if (decision) {
      const runId = (decision === 'approve' ? values.approve : values.cancel)!;
      await decideHeld(decision, runId);
      return await finish(app, [runId], braze, quiet, 'http', timeoutMs);
    }
    const uploaded = await uploadExportDir(app.deps, exportDir);
    say(`export: ${uploaded.length} blobs uploaded from ${exportDir} to container ${settingsEnv.EXPORT_CONTAINER}`);

    const runIds = reconcile
      ? await fireReconcile(
          trigger,
          config.destinations.map((d) => d.name),
          values.force ?? false,
          dryRun,
        )
      : await fire(app, trigger, uploaded, values.force ?? false, dryRun);
    if (runIds.length === 0) throw new InvalidInputError('the trigger started no run: see the messages above');
    say(`runs: ${runIds.join(', ')} (trigger ${trigger})`);
    return await finish(app, runIds, braze, quiet, trigger, timeoutMs);
  } finally {
    await app?.stop();
    await braze?.stop();
    await azurite?.stop();
  }
}

/** Waits for the runs to end (or wait for a person), prints what they did, and answers the exit code. */
async function finish(
  app: LocalFunctionApp,
  runIds: string[],
  braze: BrazeServer | undefined,
  quiet: boolean,
  trigger: string,
  timeoutMs: number,
): Promise<RunnerResult> {
  const progress = new ProgressLine(quiet);
  const runs = await app.waitForRuns(runIds, {
    timeoutMs,
    progressEveryMs: progress.everyMs,
    onProgress: (current) => progress.show(current.map((run) => progressText(run))),
  });
  progress.done();
  const ok = runs.every(
    (run) =>
      run.status === 'completed' &&
      (run.dryRun
        ? run.rowsRejectedInput + run.rowsSkippedUnchanged + run.rowsEnqueued === run.rowsRead
        : run.rowsFailed === 0 && rowsAccountedFor(run) === run.rowsRead),
  );
  // Before the summary: with --json the summary stays the last line.
  await printPreviews(app, runs, quiet);
  printDrift(runs, quiet);
  report(runs, braze, quiet, trigger);
  if (!quiet) await printRejects(app, runs);
  const held = runs.filter((run) => run.status === 'held');
  for (const run of held) {
    console.error(
      `\nrun ${run.runId} is held by the destination's guard: ${run.heldReason}. Nothing was sent, the delivered state is unchanged.\n` +
        `  To send exactly the preview above: npm start -- --approve ${run.runId}   (or POST /api/runs/${run.runId}/approve)\n` +
        `  To end it with nothing sent:       npm start -- --cancel ${run.runId}    (or POST /api/runs/${run.runId}/cancel)\n` +
        `  (with AzureWebJobsStorage set to the storage it is kept in)`,
    );
  }
  return { exitCode: ok ? 0 : held.length > 0 ? 3 : 1, runs };
}

/** POST /api/runs/{id}/approve or /cancel, through the local HTTP host with a function key. */
async function decideHeld(decision: 'approve' | 'cancel', runId: string): Promise<void> {
  const functionKey = randomBytes(16).toString('hex');
  const host = new LocalHttpHost(functionKey);
  const url = await host.start();
  try {
    const response = await fetch(`${url}/api/runs/${encodeURIComponent(runId)}/${decision}`, { method: 'POST', headers: { 'x-functions-key': functionKey } });
    const body = (await response.json()) as { error?: string };
    if (response.status >= 300)
      throw new InvalidInputError(`POST /api/runs/${runId}/${decision} answered ${response.status}: ${body.error ?? JSON.stringify(body)}`);
  } finally {
    await host.stop();
  }
}

/** POST /api/reconcile per destination, through the local HTTP host with a function key. */
async function fireReconcile(trigger: string, destinations: string[], force: boolean, dryRun: boolean): Promise<string[]> {
  if (trigger !== 'http') throw new InvalidInputError('--reconcile goes with --trigger http');
  if (force) throw new InvalidInputError('--reconcile sends only what drifted; it does not go with --force');
  const functionKey = randomBytes(16).toString('hex');
  const host = new LocalHttpHost(functionKey);
  const url = await host.start();
  const runIds: string[] = [];
  try {
    for (const destination of destinations) {
      const response = await fetch(`${url}/api/reconcile`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-functions-key': functionKey },
        body: JSON.stringify({ destination, ...(dryRun ? { dryRun } : {}) }),
      });
      const body = (await response.json()) as { runs?: { runId: string }[] };
      if (response.status !== 202) throw new InvalidInputError(`POST /api/reconcile answered ${response.status}: ${JSON.stringify(body)}`);
      runIds.push(...(body.runs ?? []).map((r) => r.runId));
    }
  } finally {
    await host.stop();
  }
  return runIds;
}

/** A reconcile's drift: printed whole with --json, summed up otherwise. */
function printDrift(runs: RunRecord[], json: boolean): void {
  for (const run of runs) {
    if (!run.drift) continue;
    const drift = JSON.parse(run.drift) as {
      segments: Record<string, { missing: number; stray: number; unresolved: number }>;
      staleValues: Record<string, number>;
      profiles: number;
      requests: number;
      usersUnmatched: number;
    };
    if (json) {
      console.log(JSON.stringify({ drift }));
      continue;
    }
    console.log(`
Drift found by run ${run.runId}${run.dryRun ? ' (dry run: nothing was repaired)' : ''}`);
    for (const [segment, d] of Object.entries(drift.segments))
      console.log(
        `  ${segment}: ${d.missing} members missing in Braze, ${d.stray} stray members${d.unresolved ? `, ${d.unresolved} unresolved (left alone)` : ''}`,
      );
    for (const [attribute, n] of Object.entries(drift.staleValues)) console.log(`  ${attribute}: ${n} stale values`);
    console.log(
      `  ${drift.profiles} profiles ${run.dryRun ? 'would be repaired' : 'repaired'} in ${drift.requests} requests; ${drift.usersUnmatched} exported users not matchable`,
    );
  }
}

async function fire(app: LocalFunctionApp, trigger: string, uploaded: string[], force: boolean, dryRun: boolean): Promise<string[]> {
  const context = (name: string, triggerMetadata?: Record<string, unknown>) =>
    new InvocationContext({ functionName: name, invocationId: `local-${Date.now()}`, triggerMetadata, logHandler: () => undefined });
  // Only a request has a body to carry these: the timer and a blob event would start a real, incremental run.
  if (trigger !== 'http' && force) throw new InvalidInputError('--force goes with --trigger http');
  if (trigger !== 'http' && dryRun) throw new InvalidInputError('--dry-run goes with --trigger http');
  const before = new Set((await app.deps.runs.listRuns()).map((r) => r.runId));
  if (trigger === 'http') {
    // Through a real HTTP request, with the function key the host would demand.
    const functionKey = randomBytes(16).toString('hex');
    const host = new LocalHttpHost(functionKey);
    const url = await host.start();
    try {
      const response = await fetch(`${url}/api/sync`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-functions-key': functionKey },
        body: JSON.stringify({ ...(force ? { force } : {}), ...(dryRun ? { dryRun } : {}) }),
      });
      const body = (await response.json()) as { runs?: { runId: string }[] };
      if (response.status !== 202) throw new InvalidInputError(`POST /api/sync answered ${response.status}: ${JSON.stringify(body)}`);
      return (body.runs ?? []).map((r) => r.runId);
    } finally {
      await host.stop();
    }
  }
  if (trigger === 'blob') {
    // Event Grid fires once per blob, in the order CI writes them; overlapping events meet on one run.
    for (const blobName of uploaded) {
      await exportBlobDrop(await blobCreatedEvent(app.deps.storage.exportContainer, blobName), context('exportBlobDrop'));
    }
  } else {
    await syncTimer({ isPastDue: false, schedule: { adjustForDST: false }, scheduleStatus: { last: '', next: '', lastUpdated: '' } }, context('syncTimer'));
  }
  const after = await app.deps.runs.listRuns();
  return after.filter((r) => !before.has(r.runId) || r.status !== 'completed').map((r) => r.runId);
}

/** One run's progress: rows read and their rate, profiles delivered of enqueued, and the time left. */
function progressText(run: RunRecord): string {
  const p = runProgress(run, Date.now());
  const seconds = Math.max(1, (Date.now() - Date.parse(run.createdAt)) / 1000);
  const rowsPerSecond = Math.round(p.rowsRead / seconds);
  const profiles = run.enqueueDone ? `${p.profilesDelivered}/${run.usersEnqueued} profiles delivered` : 'reading';
  const eta = p.etaSeconds !== undefined ? `, ETA ${p.etaSeconds} s` : '';
  return `${run.runId} ${run.status}: ${p.rowsRead} rows read (${rowsPerSecond}/s), ${profiles}${eta}`;
}

/**
 * Progress while a run is long: on a terminal one line that updates in place, elsewhere (CI logs,
 * a pipe) a line every few seconds.
 */
class ProgressLine {
  private readonly tty = Boolean(process.stdout.isTTY);
  readonly everyMs = this.tty ? 250 : 5_000;
  private shown = false;
  constructor(private readonly quiet: boolean) {}
  show(lines: string[]): void {
    if (this.quiet) return;
    const text = `  ${lines.join(' | ')}`;
    if (this.tty) {
      process.stdout.write(`\r\x1b[2K${text.slice(0, (process.stdout.columns ?? 120) - 1)}`);
      this.shown = true;
    } else console.log(text);
  }
  done(): void {
    if (this.shown) process.stdout.write('\n');
  }
}

/**
 * `--runs`: the run history of the storage AzureWebJobsStorage names — nothing is started,
 * uploaded or sent.
 */
async function listRuns(env: NodeJS.ProcessEnv, filter: { destination?: string; status?: string; limit?: string }, json: boolean): Promise<RunnerResult> {
  if (!env.AzureWebJobsStorage) throw new InvalidInputError('--runs reads the runs of the storage AzureWebJobsStorage names; set it to a connection string');
  const query = runHistoryQuerySchema.safeParse({ destination: filter.destination, status: filter.status, limit: filter.limit });
  if (!query.success) throw new InvalidInputError(formatIssues('--runs options', query.error));
  const table = TableClient.fromConnectionString(env.AzureWebJobsStorage, env.RUNS_TABLE ?? 'brazeconnectorruns', { allowInsecureConnection: true });
  const store = new RunStore(table, systemClock);
  const history = await runHistory(store, query.data, Date.now());
  if (json) {
    console.log(JSON.stringify(history));
    return { exitCode: 0, runs: [] };
  }
  if (history.runs.length === 0) console.log('no runs');
  for (const run of history.runs) {
    console.log(
      `${run.createdAt}  ${run.runId}  ${run.status.padEnd(10)}  ${run.destination}  refresh ${run.refresh}  rows ${run.rows.read} read, ${run.rows.delivered} delivered, ${run.rows.skippedUnchanged} unchanged, ${run.rows.rejected} rejected, ${run.rows.failed} failed${run.error ? `  — ${run.error}` : ''}`,
    );
  }
  if (history.next) console.log(`(more: --limit ${query.data.limit * 2})`);
  return { exitCode: 0, runs: [] };
}

/** --user: GET /api/users/{id}'s answer, read from the storage AzureWebJobsStorage names. */
async function findUser(env: NodeJS.ProcessEnv, id: string, options: { destination?: string; by?: string; config?: string }): Promise<RunnerResult> {
  if (!env.AzureWebJobsStorage)
    throw new InvalidInputError('--user reads the delivered state of the storage AzureWebJobsStorage names; set it to a connection string');
  const config = readConfigFile(path.resolve(options.config ?? path.join(PROJECT_ROOT, 'sample', 'config.json')));
  const query = userQuerySchema.safeParse({ destination: options.destination ?? config.destinations[0].name, by: options.by });
  if (!query.success) throw new InvalidInputError(formatIssues('--user options', query.error));
  // Only storage is read: the Braze settings the connector insists on are stand-ins.
  const deps = createConnector({
    env: {
      ...env,
      EXPORT_CONTAINER: env.EXPORT_CONTAINER || 'customer-insights',
      BRAZE_REST_ENDPOINT: env.BRAZE_REST_ENDPOINT || 'rest.iad-01.braze.com',
      BRAZE_API_KEY: env.BRAZE_API_KEY || (env.BRAZE_API_KEY_SECRET_URI ? undefined : 'not-used'),
      SYNC_CONFIG: env.SYNC_CONFIG || '{}',
    },
    config,
  });
  const found = await lookUpUser(deps, { ...query.data, id });
  if (found.kind === 'refused') throw new InvalidInputError(found.reason);
  console.log(JSON.stringify(found.body, null, 2));
  return { exitCode: 0, runs: [] };
}

/** A dry run's preview, as GET /api/runs/{id}/preview answers it: printed whole with --json, summed up otherwise. */
async function printPreviews(app: LocalFunctionApp, runs: RunRecord[], json: boolean): Promise<void> {
  for (const run of runs) {
    if (!(run.dryRun || run.status === 'held') || run.reconcile) continue;
    const found = await readPreview(app.deps, run.runId);
    if (found.kind === 'none') {
      console.error(`  ${found.reason}`);
      continue;
    }
    if (json) {
      console.log(JSON.stringify({ preview: found.preview }));
      continue;
    }
    const p = found.preview as PreviewReport;
    console.log(`\nPreview of run ${run.runId} (${run.dryRun ? 'dry run' : 'held by the guard'}: nothing was sent, the delivered state is unchanged)`);
    console.log(
      `  ${run.dryRun ? 'a real run' : 'approved, it'} would send ${p.profiles.wouldSend} profiles (${p.profiles.leaving} leaving) in ${p.brazeRequests} requests, ${p.dataPoints} data points (full send: ${p.dataPointsFullSend})`,
    );
    for (const [segment, s] of Object.entries(p.segments))
      console.log(`  ${segment}: ${s.joiners} join, ${s.leavers} leave, ${s.changed} change, ${s.unchanged} unchanged`);
    for (const [attribute, n] of Object.entries(p.attributes)) console.log(`  ${attribute}: ${n} values change`);
    for (const change of p.sample.slice(0, 10)) console.log(`  e.g. ${change.identifier} ${change.change}: ${change.attributes.join(', ')}`);
  }
}

interface PreviewReport {
  profiles: { wouldSend: number; leaving: number };
  brazeRequests: number;
  dataPoints: number;
  dataPointsFullSend: number;
  segments: Record<string, { joiners: number; leavers: number; changed: number; unchanged: number }>;
  attributes: Record<string, number>;
  sample: { identifier: string; change: string; attributes: string[] }[];
}

function report(runs: RunRecord[], braze: BrazeServer | undefined, json: boolean, trigger: string): void {
  const summaries = runs.map(runSummary);
  if (json) {
    const totals = summaries.reduce(
      (t, s) => ({
        rowsRead: t.rowsRead + s.rows.read,
        delivered: t.delivered + s.rows.delivered,
        skippedUnchanged: t.skippedUnchanged + s.rows.skippedUnchanged,
        rejected: t.rejected + s.rows.rejected,
        failed: t.failed + s.rows.failed,
        profilesDelivered: t.profilesDelivered + s.users.delivered,
        exits: t.exits + s.users.exitsEnqueued,
        brazeRequests: t.brazeRequests + s.braze.requests,
      }),
      { rowsRead: 0, delivered: 0, skippedUnchanged: 0, rejected: 0, failed: 0, profilesDelivered: 0, exits: 0, brazeRequests: 0 },
    );
    console.log(
      JSON.stringify({
        trigger,
        ...totals,
        runs: summaries.map((s) => ({ ...s, rejectsReport: rejectsReportName(s.runId) })),
        brazeProfiles: braze?.profiles.size,
      }),
    );
    return;
  }
  console.log('\nSummary');
  for (const s of summaries) {
    console.log(`  run ${s.runId} (${s.destination}, refresh ${s.refresh}): ${s.status}${s.error ? ` — ${s.error}` : ''}`);
    console.log(
      `    rows: ${s.rows.read} read = ${s.rows.delivered} delivered + ${s.rows.skippedUnchanged} unchanged + ${s.rows.rejected} rejected + ${s.rows.failed} failed`,
    );
    console.log(
      `    profiles: ${s.users.delivered} delivered (${s.users.exitsEnqueued} segment exits), ${s.users.rejected} rejected by Braze; ${s.braze.requests} requests, ${s.braze.dataPointsSent} data points (full send: ${s.braze.dataPointsFullSend})`,
    );
    for (const [reason, n] of Object.entries(s.rejectedByReason)) console.log(`    rejected: ${n} × ${reason}`);
    console.log(`    rejects report: blob ${rejectsReportName(s.runId)} in the state container`);
  }
  if (braze) console.log(`  local Braze now holds ${braze.profiles.size} profiles`);
}

/** Azurite in memory goes away with the runner, so show the rejects reports (no e-mails or names in them). */
async function printRejects(app: LocalFunctionApp, runs: RunRecord[]): Promise<void> {
  const shown = 20;
  for (const run of runs) {
    let text: string;
    try {
      text = (await app.deps.storage.stateContainer.getBlobClient(rejectsReportName(run.runId)).downloadToBuffer()).toString('utf8');
    } catch {
      continue;
    }
    const lines = text.trimEnd().split('\n');
    if (lines.length <= 1) continue;
    console.log(`\nRejects report of ${run.runId}${lines.length - 1 > shown ? ` (first ${shown} of ${lines.length - 1})` : ''}:`);
    for (const line of lines.slice(0, shown + 1)) console.log(`  ${line}`);
  }
}

if (require.main === module) {
  main(process.argv.slice(2), process.env)
    .then((result) => {
      process.exitCode = result.exitCode;
    })
    .catch((error) => {
      console.error(error instanceof InvalidInputError ? error.message : describeError(error));
      process.exitCode = 2;
    });
}

export { main as runLocal };
