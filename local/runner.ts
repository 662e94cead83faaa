import './quietTestMode';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { LocalHttpHost } from './httpHost';
import { describeError, InvalidInputError } from '../shared/errors';
import { TableClient } from '@azure/data-tables';
import { systemClock } from '../shared/clock';
import { formatIssues } from '../shared/errors';
import { readSyncConfigFile } from '../shared/config/syncConfig';
import { isTerminal, rowsAccountedFor, runProgress, runSummary, type RunRecord } from '../shared/runs/runRecord';
import { loadAppSettings } from '../shared/config/settings';
import type { ConnectorRecord } from '../shared/telemetry';
import { RunStore } from '../shared/runs/runStore';
import { readPreview, runHistory, runHistoryQuerySchema } from '../shared/sync/runHistory';
import { rejectsReportName } from '../shared/runs/runBlobs';
import { consoleLogger, type Logger } from '../shared/log';
import { syncTimer } from '../functions/syncTimer';
import { exportBlobDrop } from '../functions/exportBlobDrop';
import { blobCreatedEvent } from './blobEvents';
import { startAzurite, type AzuriteInstance } from './azurite';
import { BrazeServer } from './brazeServer';
import { configFileOf, functionContext, localBrazeSegments, LocalFunctionApp, PROJECT_ROOT, serveOnStorage, uploadExportDir } from './stack';
import { lookUpUser, userQuerySchema } from '../shared/sync/userLookup';
import { createConnector } from '../shared/sync/connector';

const USAGE = `Usage: npm start -- [options]

Runs the connector once, end to end, without the Functions host: starts Azurite (in memory) and a
Braze-compatible local server unless told otherwise, uploads an export, triggers a sync, and drives
the queue-triggered functions until every run ends.

Options:
  --export-dir DIR     a folder laid out like the export container (default: sample/export)
  --config FILE        the mapping config (default: the file SYNC_CONFIG_FILE names, else
                       sample/config.json)
  --trigger KIND       timer | http | blob: which function starts the run (default: timer)
  --force              send every profile in full and rebuild the delivered state (over http)
  --dry-run            read, map and diff, send nothing, leave the state alone, and print the
                       preview: what a real run would change in Braze and what it would cost
  --destination NAME   only this destination of the config (over http)
  --reconcile          compare Braze's segment exports with the export and repair what drifted
                       (with --dry-run: only report the drift); the local Braze server exports
                       the config's segments by their membership attributes
  --json               print one JSON document on stdout, and nothing else there (with
                       npm start --silent -- --json, so npm's banner stays out of it)
  --timeout SECONDS    give up waiting after this long (default: 600)
  --runs               list the run history of the storage AzureWebJobsStorage names, newest
                       first (with --destination NAME, --status STATUS, --limit N, --json);
                       starts nothing
  --approve RUN        a run the destination's guard held (status held) sends exactly what it
                       previewed; with AzureWebJobsStorage, where the held run is kept
                       (a run of npm run serve: on its page or API)
  --cancel RUN         a held run ends with nothing sent and the delivered state unchanged
  --resume RUN         a halted run (Braze refused the key, or its host cannot be reached) sends
                       again, once the cause is fixed; with AzureWebJobsStorage
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
Exit code 0 when every row of the runs this start's trigger started or met ended delivered,
unchanged or rejected with a reason; 3 when a run was held by the destination's guard (nothing
sent: approve or cancel it); 2 when a flag, setting or config is wrong (said before anything
starts) or no run started; 1 otherwise.`;

interface RunnerResult {
  exitCode: number;
  runs: RunRecord[];
}

const OPTIONS = {
  'export-dir': { type: 'string' },
  config: { type: 'string' },
  trigger: { type: 'string' },
  force: { type: 'boolean', default: false },
  'dry-run': { type: 'boolean', default: false },
  reconcile: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  timeout: { type: 'string', default: '600' },
  runs: { type: 'boolean', default: false },
  approve: { type: 'string' },
  cancel: { type: 'string' },
  resume: { type: 'string' },
  user: { type: 'string' },
  by: { type: 'string' },
  destination: { type: 'string' },
  status: { type: 'string' },
  limit: { type: 'string' },
  help: { type: 'boolean', default: false },
} as const;

const TRIGGERS = ['timer', 'http', 'blob'] as const;

/** The flags, every one checked before anything starts: a wrong one costs nothing. */
function parseFlags(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, strict: true }).values;
  } catch (error) {
    throw new InvalidInputError(`${(error as Error).message} (npm start -- --help lists the options)`);
  }
}

async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<RunnerResult> {
  const values = parseFlags(argv);
  if (values.help) {
    console.log(USAGE);
    return { exitCode: 0, runs: [] };
  }
  const timeoutSeconds = Number(values.timeout);
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0)
    throw new InvalidInputError(`--timeout must be a number of seconds above 0, not "${values.timeout}"`);
  if (values.runs) return listRuns(env, { destination: values.destination, status: values.status, limit: values.limit }, values.json ?? false);
  if (values.user !== undefined) return findUser(env, values.user, { destination: values.destination, by: values.by, config: values.config });
  // A flag of another mode is refused, not ignored: --status on a sync would seem to have done something.
  if (values.status !== undefined || values.limit !== undefined)
    throw new InvalidInputError(`${values.status !== undefined ? '--status' : '--limit'} goes with --runs`);
  if (values.by !== undefined) throw new InvalidInputError('--by goes with --user');
  const decisions = (['approve', 'cancel', 'resume'] as const).filter((d) => values[d] !== undefined);
  if (decisions.length > 1) throw new InvalidInputError(`${decisions.map((d) => `--${d}`).join(' and ')} exclude each other`);
  const decision = decisions[0];
  if (decision && values.destination !== undefined) throw new InvalidInputError(`--destination does not go with --${decision}: the run names its destination`);
  if (decision && !env.AzureWebJobsStorage)
    throw new InvalidInputError(
      `--${decision} acts on a run kept in the storage AzureWebJobsStorage names (the in-memory Azurite of a plain npm start is gone when it exits); set it to that storage's connection string (a run of npm run serve: on its page or API)`,
    );
  const dryRun = values['dry-run'] ?? false;
  const reconcile = values.reconcile ?? false;
  const force = values.force ?? false;
  if (values.trigger !== undefined && !(TRIGGERS as readonly string[]).includes(values.trigger))
    throw new InvalidInputError(`--trigger must be timer, http or blob, not "${values.trigger}"`);
  // Only a request has a body to carry these: each asks for --trigger http, which it implies.
  const overHttp = [force && '--force', dryRun && '--dry-run', reconcile && '--reconcile', values.destination !== undefined && '--destination'].filter(
    (f): f is string => Boolean(f),
  );
  if (overHttp.length && values.trigger !== undefined && values.trigger !== 'http')
    throw new InvalidInputError(
      `${overHttp.join(' and ')} go${overHttp.length > 1 ? '' : 'es'} with --trigger http (a request's body carries it), not --trigger ${values.trigger}`,
    );
  if (reconcile && force) throw new InvalidInputError('--reconcile sends only what drifted; it does not go with --force');
  const trigger = values.trigger ?? (overHttp.length ? 'http' : 'timer');
  const exportDir = path.resolve(values['export-dir'] ?? path.join(PROJECT_ROOT, 'sample', 'export'));
  if (!decision && !(existsSync(exportDir) && statSync(exportDir).isDirectory()))
    throw new InvalidInputError(`${values['export-dir'] !== undefined ? '--export-dir' : 'the sample export'}: no folder "${exportDir}"`);
  const { file: configFile, source: configSource } = configFileOf(values.config, env);
  const config = readSyncConfigFile(configFile, configSource);
  const timeoutMs = timeoutSeconds * 1000;
  const quiet = values.json ?? false;
  // The trigger's outcome (the runs it started or met, and why others did not start) comes as a record.
  const requested: Extract<ConnectorRecord, { connectorEvent: 'SyncRequested' }>[] = [];
  const record = (r: ConnectorRecord) => {
    if (r.connectorEvent === 'SyncRequested') requested.push(r);
  };
  const log: Logger = quiet ? { info: () => undefined, warn: (m) => console.error(m), error: (m) => console.error(m), record } : { ...consoleLogger, record };
  const say = (line: string) => {
    if (!quiet) console.log(line);
  };

  // Every setting checked before anything starts; the local stand-ins are replaced once it has.
  const localBraze = !env.BRAZE_REST_ENDPOINT && !env.BRAZE_API_KEY && !env.BRAZE_API_KEY_SECRET_URI;
  const settingsEnv: Record<string, string | undefined> = {
    ...env,
    EXPORT_CONTAINER: env.EXPORT_CONTAINER || 'customer-insights',
    SYNC_CONFIG_FILE: configFile,
    ...(env.AzureWebJobsStorage ? {} : { AzureWebJobsStorage: 'UseDevelopmentStorage=true' }),
    ...(localBraze ? { BRAZE_REST_ENDPOINT: 'http://127.0.0.1:1', BRAZE_API_KEY: 'local' } : {}),
  };
  loadAppSettings(settingsEnv);

  let azurite: AzuriteInstance | undefined;
  let braze: BrazeServer | undefined;
  let app: LocalFunctionApp | undefined;
  try {
    if (!env.AzureWebJobsStorage) {
      azurite = await startAzurite();
      settingsEnv.AzureWebJobsStorage = azurite.connectionString;
      say('storage: Azurite (in memory)');
    } else {
      say('storage: AzureWebJobsStorage');
      // Its hosts and this start's would share the queues, and this start's batches would go to a
      // Braze server that ends with it.
      const served = await serveOnStorage(createConnector({ env: settingsEnv, config }));
      if (served)
        throw new InvalidInputError(
          `npm run serve is running on this storage (${served}): ${
            decision
              ? `${decision} the run on its page (${served}/?code=KEY) or POST ${served}/api/runs/${values[decision]}/${decision} with its function key (in its state folder's keys.json)`
              : 'sync there (its page, or POST /api/sync), or stop it first'
          }; a second set of hosts here would take its queue messages`,
        );
    }
    if (localBraze) {
      const apiKey = `local-${Math.random().toString(36).slice(2)}`;
      braze = new BrazeServer({ apiKey, segments: localBrazeSegments(config) });
      settingsEnv.BRAZE_REST_ENDPOINT = await braze.start();
      settingsEnv.BRAZE_API_KEY = apiKey;
      // The local server's exports are ready in a moment; Braze's take minutes.
      settingsEnv.RECONCILE_POLL_SECONDS ??= '1';
      say(`braze: local server at ${settingsEnv.BRAZE_REST_ENDPOINT}`);
    } else {
      say(`braze: ${env.BRAZE_REST_ENDPOINT}`);
    }

    app = new LocalFunctionApp({ env: settingsEnv, config, log });
    await app.start();
    if (decision) {
      const runId = values[decision]!;
      await decideRun(decision, runId, log);
      return await finish(app, [runId], braze, quiet, 'http', timeoutMs, new Set(), true);
    }
    const uploaded = await uploadExportDir(app.deps, exportDir);
    say(
      `export: ${uploaded.length} blobs uploaded from ${exportDir} to container ${settingsEnv.EXPORT_CONTAINER}${uploaded.length ? '' : ' (every file is there as it is)'}`,
    );

    if (trigger === 'blob' && uploaded.length === 0) {
      const note = 'every file of the export is in the container as it is: Event Grid would announce nothing (change a file, or use --trigger timer)';
      if (quiet) console.log(JSON.stringify({ trigger, rowsRead: 0, runs: [], note }));
      else say(note);
      return { exitCode: 0, runs: [] };
    }
    const before = new Set((await app.deps.runs.listRuns()).map((r) => r.runId));
    if (reconcile) await fireReconcile(values.destination !== undefined ? [values.destination] : config.destinations.map((d) => d.name), dryRun, log);
    else await fire(app, trigger, uploaded, { force, dryRun, destination: values.destination }, log);
    // This invocation's runs only: the ones its trigger started or met. Runs an earlier invocation
    // left in the same storage are none of its business.
    const runIds = [...new Set(requested.flatMap((r) => (r.runIds ? r.runIds.split(',') : [])))];
    if (runIds.length === 0) {
      const reasons = [...new Set(requested.flatMap((r) => (r.problemReasons ? r.problemReasons.split('\n') : [])))];
      throw new InvalidInputError(
        `the trigger started no run${reasons.length ? `:\n${reasons.map((r) => `  - ${r}`).join('\n')}` : ' (no configured destination matched the export)'}`,
      );
    }
    say(`runs: ${runIds.join(', ')} (trigger ${trigger})`);
    return await finish(app, runIds, braze, quiet, trigger, timeoutMs, before, Boolean(env.AzureWebJobsStorage));
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
  before: Set<string>,
  persistent: boolean,
): Promise<RunnerResult> {
  const progress = new ProgressLine(quiet);
  const runs = await app.waitForRuns(runIds, {
    timeoutMs,
    progressEveryMs: progress.everyMs,
    onProgress: (current) => progress.show(current.map((run) => progressText(run))),
  });
  progress.done();
  // The queue functions stop before the summary: nothing they log lands after it.
  await app.stopHosts();
  const ok = runs.every(
    (run) =>
      run.status === 'completed' &&
      (run.dryRun
        ? run.rowsRejectedInput + run.rowsSkippedUnchanged + run.rowsEnqueued === run.rowsRead
        : run.rowsFailed === 0 && rowsAccountedFor(run) === run.rowsRead),
  );
  const previews = await readPreviews(app, runs);
  if (quiet) {
    // One JSON document on stdout, whatever the mode.
    console.log(JSON.stringify(jsonReport(runs, previews, braze, trigger, before)));
  } else {
    for (const run of runs) {
      if (before.has(run.runId) && isTerminal(run.status))
        console.log(`\nrun ${run.runId} was ${run.status} before this start: refresh ${run.refreshLabel} is synced (npm start -- --force resends it)`);
    }
    printPreviews(runs, previews);
    printDrift(runs);
    report(runs, braze);
    await printRejects(app, runs);
  }
  const held = runs.filter((run) => run.status === 'held');
  for (const run of held) {
    console.error(
      `\nrun ${run.runId} is held by the destination's guard: ${run.heldReason}. Nothing was sent, the delivered state is unchanged.\n` +
        `  To send exactly the preview above: npm start -- --approve ${run.runId}   (or POST /api/runs/${run.runId}/approve)\n` +
        `  To end it with nothing sent:       npm start -- --cancel ${run.runId}    (or POST /api/runs/${run.runId}/cancel)\n` +
        `  (with AzureWebJobsStorage set to the storage it is kept in)`,
    );
  }
  for (const run of runs.filter((r) => r.status === 'halted')) {
    console.error(
      `\nrun ${run.runId} halted: ${run.error ?? 'Braze refused to go on'}\n` +
        (!persistent
          ? '  Its storage was the in-memory Azurite of this start, gone now: fix the cause and start again, or use npm run serve to keep a halted run and resume it.'
          : `  Once the cause is fixed: npm start -- --resume ${run.runId}   (or POST /api/runs/${run.runId}/resume)`),
    );
  }
  return { exitCode: ok ? 0 : held.length > 0 ? 3 : 1, runs };
}

/**
 * POSTs to the local HTTP host, started for the calls and stopped after, with the function key the
 * host would demand; an answer outside `accepted` is an error naming the route and what it said.
 */
async function postThroughHost(log: Logger, calls: { route: string; body?: unknown }[], accepted: (status: number) => boolean): Promise<void> {
  const functionKey = randomBytes(16).toString('hex');
  const host = new LocalHttpHost(functionKey, { log });
  const url = await host.start();
  try {
    for (const { route, body } of calls) {
      const response = await fetch(`${url}${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-functions-key': functionKey },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const answer = (await response.json()) as { error?: string };
      if (!accepted(response.status)) throw new InvalidInputError(`POST ${route} answered ${response.status}: ${answer.error ?? JSON.stringify(answer)}`);
    }
  } finally {
    await host.stop();
  }
}

/** A sync or reconcile that started no run answers 409/422 naming why; the trigger's record carries it to the caller. */
const startedOrSaidWhy = (status: number) => status === 202 || status === 409 || status === 422;

/** POST /api/runs/{id}/approve, /cancel or /resume. */
function decideRun(decision: 'approve' | 'cancel' | 'resume', runId: string, log: Logger): Promise<void> {
  return postThroughHost(log, [{ route: `/api/runs/${encodeURIComponent(runId)}/${decision}` }], (status) => status < 300);
}

/** POST /api/reconcile per destination. */
function fireReconcile(destinations: string[], dryRun: boolean, log: Logger): Promise<void> {
  return postThroughHost(
    log,
    destinations.map((destination) => ({ route: '/api/reconcile', body: { destination, ...(dryRun ? { dryRun } : {}) } })),
    startedOrSaidWhy,
  );
}

interface Drift {
  segments: Record<string, { missing: number; stray: number; unresolved: number }>;
  staleValues: Record<string, number>;
  profiles: number;
  requests: number;
  usersUnmatched: number;
}

/** A reconcile's drift, summed up. */
function printDrift(runs: RunRecord[]): void {
  for (const run of runs) {
    if (!run.drift) continue;
    const drift = JSON.parse(run.drift) as Drift;
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

/** Fires the timer, the blob-drop function per uploaded blob, or POST /api/sync. */
async function fire(
  app: LocalFunctionApp,
  trigger: string,
  uploaded: string[],
  body: { force: boolean; dryRun: boolean; destination?: string },
  log: Logger,
): Promise<void> {
  const { force, dryRun, destination } = body;
  if (trigger === 'http') {
    // Through a real HTTP request, with the function key the host would demand.
    const body = { ...(force ? { force } : {}), ...(dryRun ? { dryRun } : {}), ...(destination !== undefined ? { destination } : {}) };
    await postThroughHost(log, [{ route: '/api/sync', body }], startedOrSaidWhy);
    return;
  }
  if (trigger === 'blob') {
    // Event Grid fires once per blob, in the order CI writes them; overlapping events meet on one run.
    for (const blobName of uploaded) {
      await exportBlobDrop(await blobCreatedEvent(app.deps.storage.exportContainer, blobName), functionContext('exportBlobDrop', log));
    }
    return;
  }
  await syncTimer(
    { isPastDue: false, schedule: { adjustForDST: false }, scheduleStatus: { last: '', next: '', lastUpdated: '' } },
    functionContext('syncTimer', log),
  );
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
  const query = runHistoryQuerySchema.safeParse({ destination: filter.destination, status: filter.status, limit: filter.limit }, { reportInput: true });
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
  const { file, source } = configFileOf(options.config, env);
  const config = readSyncConfigFile(file, source);
  const query = userQuerySchema.safeParse({ destination: options.destination ?? config.destinations[0].name, by: options.by }, { reportInput: true });
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

/** The preview of each dry or held run, as GET /api/runs/{id}/preview answers it. */
async function readPreviews(app: LocalFunctionApp, runs: RunRecord[]): Promise<Map<string, PreviewReport>> {
  const previews = new Map<string, PreviewReport>();
  for (const run of runs) {
    if (!(run.dryRun || run.status === 'held') || run.reconcile) continue;
    const found = await readPreview(app.deps, run.runId);
    if (found.kind === 'none') console.error(`  ${found.reason}`);
    else previews.set(run.runId, found.preview as PreviewReport);
  }
  return previews;
}

function printPreviews(runs: RunRecord[], previews: Map<string, PreviewReport>): void {
  for (const run of runs) {
    const p = previews.get(run.runId);
    if (!p) continue;
    console.log(`\nPreview of run ${run.runId} (${run.dryRun ? 'dry run' : 'held by the guard'}: nothing was sent, the delivered state is unchanged)`);
    console.log(
      `  ${run.dryRun ? 'a real run' : 'approved, it'} would send ${p.profiles.wouldSend} profiles (${p.profiles.leaving} leaving) in ${p.brazeRequests} requests, ${p.dataPoints} data points (full send: ${p.dataPointsFullSend})`,
    );
    for (const [segment, g] of Object.entries(p.segments))
      console.log(`  ${segment}: ${g.joiners} join, ${g.leavers} leave, ${g.changed} change, ${g.unchanged} unchanged`);
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

/** `--json`'s one document: totals that add up (read = delivered + would send + unchanged + rejected + failed + parked + pending), and each run whole. */
function jsonReport(runs: RunRecord[], previews: Map<string, PreviewReport>, braze: BrazeServer | undefined, trigger: string, before: Set<string>) {
  const summaries = runs.map(runSummary);
  const totals = summaries.reduce(
    (t, s) => ({
      rowsRead: t.rowsRead + s.rows.read,
      delivered: t.delivered + s.rows.delivered,
      wouldSend: t.wouldSend + (s.rows.wouldSend ?? 0),
      skippedUnchanged: t.skippedUnchanged + s.rows.skippedUnchanged,
      rejected: t.rejected + s.rows.rejected,
      failed: t.failed + s.rows.failed,
      parked: t.parked + s.rows.parked,
      pending: t.pending + s.rows.pending,
      profilesDelivered: t.profilesDelivered + s.users.delivered,
      exits: t.exits + s.users.exitsEnqueued,
      brazeRequests: t.brazeRequests + s.braze.requests,
    }),
    {
      rowsRead: 0,
      delivered: 0,
      wouldSend: 0,
      skippedUnchanged: 0,
      rejected: 0,
      failed: 0,
      parked: 0,
      pending: 0,
      profilesDelivered: 0,
      exits: 0,
      brazeRequests: 0,
    },
  );
  return {
    trigger,
    ...totals,
    runs: summaries.map((s) => ({
      ...s,
      startedBefore: before.has(s.runId) || undefined,
      rejectsReport: rejectsReportName(s.runId),
      preview: previews.get(s.runId),
    })),
    brazeProfiles: braze?.profiles.size,
  };
}

function report(runs: RunRecord[], braze: BrazeServer | undefined): void {
  const summaries = runs.map(runSummary);
  console.log('\nSummary');
  for (const s of summaries) {
    console.log(`  run ${s.runId} (${s.destination}, refresh ${s.refresh}): ${s.status}${s.error ? ` — ${s.error}` : ''}`);
    const r = s.rows;
    const parts = s.dryRun
      ? [`${r.wouldSend ?? 0} would be sent`, `${r.skippedUnchanged} unchanged`, `${r.rejected} rejected`]
      : [
          `${r.delivered} delivered`,
          `${r.skippedUnchanged} unchanged`,
          `${r.rejected} rejected`,
          `${r.failed} failed`,
          ...(r.parked ? [`${r.parked} parked`] : []),
          ...(r.pending ? [`${r.pending} pending`] : []),
        ];
    console.log(`    rows: ${r.read} read = ${parts.join(' + ')}`);
    if (!s.dryRun)
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
  if (process.argv.includes('--json') && process.env.npm_lifecycle_event === 'start' && process.env.npm_config_loglevel !== 'silent')
    console.error('npm printed its banner on stdout before the JSON: run npm start --silent -- --json (or npm -s start -- --json) for the document alone');
  main(process.argv.slice(2), process.env)
    .then((result) => {
      process.exitCode = result.exitCode;
    })
    .catch((error) => {
      const message = error instanceof InvalidInputError ? error.message : describeError(error);
      console.error(message);
      // --json promises one document on stdout, failure included.
      if (process.argv.includes('--json')) console.log(JSON.stringify({ error: message }));
      // 2: what the user gave is wrong (said before anything started, or no run started); 1: the rest (a timeout, a failure).
      process.exitCode = error instanceof InvalidInputError ? 2 : 1;
    });
}

export { main as runLocal };
