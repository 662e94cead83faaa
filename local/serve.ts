import './quietTestMode';
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { CronExpressionParser } from 'cron-parser';
import { describeError, InvalidInputError } from '../shared/errors';
import { readSyncConfigFile, type SyncConfig } from '../shared/config/syncConfig';
import { loadAppSettings, ncrontabAsCron } from '../shared/config/settings';
import { runSummary, type RunRecord } from '../shared/runs/runRecord';
import type { Logger } from '../shared/log';
import { syncTimer } from '../functions/syncTimer';
import { reconcileTimer } from '../functions/reconcileTimer';
import { exportBlobDrop } from '../functions/exportBlobDrop';
import { blobCreatedEvent } from './blobEvents';
import { AZURITE_DEFAULT_BASE_PORT, startAzurite, type AzuriteInstance } from './azurite';
import { BrazeServer, type BrazeServerSnapshot } from './brazeServer';
import { LocalHttpHost, send } from './httpHost';
import {
  changedFile,
  configFileOf,
  exportDirFiles,
  functionContext,
  localBrazeSegments,
  LocalFunctionApp,
  PROJECT_ROOT,
  SERVE_HEARTBEAT_BLOB,
  SERVE_HEARTBEAT_STALE_MS,
  uploadExportFile,
} from './stack';

const USAGE = `Usage: npm run serve -- [options]

Keeps the connector running as the Functions host would, without the host: Azurite with its data
on disk, the local Braze server with its profiles kept, the queue functions, the timer on
SYNC_SCHEDULE (and RECONCILE_SCHEDULE), Event Grid events for files written into the export
folder, and the HTTP API with the status page on a fixed port. Stop it with Ctrl-C; the next start
carries on from the same state.

Options:
  --state DIR          where everything is kept (default: .local in the project)
  --export-dir DIR     the folder watched as the export container: files written into it are
                       uploaded and announced as BlobCreated events (default: DIR/export, filled
                       with the sample export on the first start)
  --config FILE        the mapping config (default: SYNC_CONFIG_FILE, else sample/config.json)
  --port N             the HTTP port (default: 7071, as func start); Azurite takes 10000-10002
                       (UseDevelopmentStorage=true); 0 picks free ports for everything
  --help               this text

Environment: any app setting of the README; BRAZE_REST_ENDPOINT and BRAZE_API_KEY send to that
Braze instead of the local server.`;

const DEFAULT_PORT = 7071;
/** How often the export folder is looked at; a file is uploaded once it stood still for two looks. */
const WATCH_EVERY_MS = 1_000;
/** How often the local Braze server's profiles are written to disk when they changed. */
const SAVE_EVERY_MS = 2_000;

export interface ServeOptions {
  stateDir: string;
  exportDir: string;
  configFile: string;
  /** What named it (a flag, SYNC_CONFIG_FILE or the sample), for an error. */
  configSource: string;
  port: number;
}

/** Flags first, before anything starts: a wrong one costs nothing. */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv): ServeOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        state: { type: 'string' },
        'export-dir': { type: 'string' },
        config: { type: 'string' },
        port: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (error) {
    throw new InvalidInputError(`${(error as Error).message} (npm run serve -- --help lists the options)`);
  }
  if (values.help) return 'help';
  const port = values.port === undefined ? DEFAULT_PORT : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidInputError(`--port must be a port number 0-65535, not "${values.port}"`);
  const stateDir = path.resolve(values.state ?? path.join(PROJECT_ROOT, '.local'));
  const { file: configFile, source: configSource } = configFileOf(values.config, env);
  const exportDir = path.resolve(values['export-dir'] ?? path.join(stateDir, 'export'));
  if (values['export-dir'] !== undefined && !(existsSync(exportDir) && statSync(exportDir).isDirectory()))
    throw new InvalidInputError(`--export-dir: no folder "${exportDir}"`);
  return { stateDir, exportDir, configFile, configSource, port };
}

interface Kept {
  functionKey: string;
  brazeApiKey: string;
}

/** The local stack, kept running. */
export class LocalServe {
  private azurite?: AzuriteInstance;
  private braze?: BrazeServer;
  private app?: LocalFunctionApp;
  private http?: LocalHttpHost;
  private readonly timers: NodeJS.Timeout[] = [];
  private stopping = false;
  /** What each file of the export folder looked like when last seen, for how many looks, and whether it was uploaded as it is. */
  private readonly seen = new Map<string, { size: number; mtimeMs: number; stillLooks: number; uploaded: boolean }>();
  private watching = Promise.resolve();
  private readonly runStatus = new Map<string, string>();
  private brazeSavedAt = -1;
  url = '';
  functionKey = '';

  constructor(
    private readonly options: ServeOptions,
    private readonly env: NodeJS.ProcessEnv,
    private readonly log: Logger,
  ) {}

  private get brazeFile(): string {
    return path.join(this.options.stateDir, 'braze-profiles.json');
  }

  async start(): Promise<void> {
    const { stateDir, exportDir, configFile, configSource, port } = this.options;
    const config = readSyncConfigFile(configFile, configSource);

    const settingsEnv: Record<string, string | undefined> = {
      ...this.env,
      EXPORT_CONTAINER: this.env.EXPORT_CONTAINER || 'customer-insights',
      SYNC_CONFIG_FILE: configFile,
    };
    const localBraze = !this.env.BRAZE_REST_ENDPOINT && !this.env.BRAZE_API_KEY && !this.env.BRAZE_API_KEY_SECRET_URI;
    if (localBraze) {
      // Stand-ins so every other setting is checked before anything starts; the real ones follow.
      settingsEnv.BRAZE_REST_ENDPOINT = 'http://127.0.0.1:1';
      settingsEnv.BRAZE_API_KEY = 'local';
      settingsEnv.RECONCILE_POLL_SECONDS ??= '1';
    }
    if (!this.env.AzureWebJobsStorage) settingsEnv.AzureWebJobsStorage = 'UseDevelopmentStorage=true';
    loadAppSettings(settingsEnv);
    mkdirSync(stateDir, { recursive: true });
    const kept = this.keys();
    this.functionKey = kept.functionKey;
    if (localBraze) settingsEnv.BRAZE_API_KEY = kept.brazeApiKey;
    const schedules = [
      { setting: 'SYNC_SCHEDULE', expression: settingsEnv.SYNC_SCHEDULE || '0 */15 * * * *', fire: () => this.fireTimer('syncTimer') },
      ...(settingsEnv.RECONCILE_SCHEDULE?.trim()
        ? [{ setting: 'RECONCILE_SCHEDULE', expression: settingsEnv.RECONCILE_SCHEDULE, fire: () => this.fireTimer('reconcileTimer') }]
        : []),
    ];
    for (const s of schedules) nextOccurrence(s.setting, s.expression);

    if (!existsSync(exportDir)) {
      cpSync(path.join(PROJECT_ROOT, 'sample', 'export'), exportDir, { recursive: true });
      this.log.info(`export: ${exportDir} created with the sample export`);
    }

    if (!this.env.AzureWebJobsStorage) {
      this.azurite = await startAzurite({ location: path.join(stateDir, 'azurite'), basePort: port === 0 ? 0 : AZURITE_DEFAULT_BASE_PORT, detached: true });
      settingsEnv.AzureWebJobsStorage = this.azurite.connectionString;
      this.log.info(`storage: Azurite, kept in ${path.join(stateDir, 'azurite')} (AzureWebJobsStorage="${this.azurite.connectionString}")`);
    } else this.log.info('storage: AzureWebJobsStorage');
    if (localBraze) {
      this.braze = new BrazeServer({ apiKey: kept.brazeApiKey, segments: localBrazeSegments(config) });
      if (existsSync(this.brazeFile)) this.braze.restore(JSON.parse(readFileSync(this.brazeFile, 'utf8')) as BrazeServerSnapshot);
      settingsEnv.BRAZE_REST_ENDPOINT = await this.braze.start();
      this.brazeSavedAt = this.braze.stats.requests;
      this.timers.push(setInterval(() => this.saveBraze(), SAVE_EVERY_MS));
      this.log.info(`braze: local server at ${settingsEnv.BRAZE_REST_ENDPOINT}, ${this.braze.profiles.size} profiles kept in ${this.brazeFile}`);
    } else this.log.info(`braze: ${this.env.BRAZE_REST_ENDPOINT}`);

    this.app = new LocalFunctionApp({ env: settingsEnv, config, log: this.log });
    await this.app.start();
    await this.app.deps.storage.exportContainer.createIfNotExists();
    for (const run of await this.app.deps.runs.listRuns()) this.runStatus.set(run.runId, run.status);

    this.http = new LocalHttpHost(kept.functionKey, {
      port,
      log: this.log,
      localRoutes: (method, url, response) => this.localRoute(method, url, response, config),
    });
    this.url = await this.http.start();

    // Says it runs here, so npm start on the same storage does not start a second set of hosts.
    await this.beat();
    this.timers.push(setInterval(() => void this.beat(), SERVE_HEARTBEAT_STALE_MS / 4));
    await this.lookAtExport();
    this.timers.push(setInterval(() => void this.lookAtExport(), WATCH_EVERY_MS));
    this.timers.push(setInterval(() => void this.reportRuns(), 1_000));
    for (const s of schedules) this.schedule(s.setting, s.expression, s.fire);

    this.log.info(`export: watching ${exportDir} as container ${settingsEnv.EXPORT_CONTAINER} (a file written there is uploaded and announced as BlobCreated)`);
    // Unstamped, each on its own line: scripts wait for them.
    console.log(`api: ${this.url}/api (x-functions-key: ${kept.functionKey})`);
    console.log(`page: ${this.url}/?code=${kept.functionKey}`);
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const timer of this.timers) clearInterval(timer);
    await this.watching;
    await this.http?.stop();
    await this.app?.deps.storage.stateContainer
      .getBlobClient(SERVE_HEARTBEAT_BLOB)
      .deleteIfExists()
      .catch(() => undefined);
    await this.app?.stop();
    this.saveBraze(true);
    await this.braze?.stop();
    await this.azurite?.stop();
  }

  private async beat(): Promise<void> {
    if (this.stopping || !this.app) return;
    const text = JSON.stringify({ url: this.url, at: Date.now() });
    await this.app.deps.storage.stateContainer
      .getBlockBlobClient(SERVE_HEARTBEAT_BLOB)
      .upload(text, Buffer.byteLength(text))
      .catch((error: unknown) => this.log.warn(`serve: heartbeat not written: ${describeError(error)}`));
  }

  /** The function key and the local Braze server's API key, made once and kept with the state. */
  private keys(): Kept {
    const file = path.join(this.options.stateDir, 'keys.json');
    if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Kept;
    const kept = { functionKey: randomBytes(24).toString('base64url'), brazeApiKey: `local-${randomBytes(12).toString('hex')}` };
    writeFileSync(file, JSON.stringify(kept, null, 2), { mode: 0o600 });
    return kept;
  }

  private saveBraze(force = false): void {
    if (!this.braze || (!force && this.braze.stats.requests === this.brazeSavedAt)) return;
    this.brazeSavedAt = this.braze.stats.requests;
    const file = this.brazeFile;
    // Profiles hold e-mail addresses and names: readable by their owner only.
    writeFileSync(`${file}.tmp`, JSON.stringify(this.braze.snapshot()), { mode: 0o600 });
    // Renamed into place: a stop in the middle of a write leaves the last whole copy.
    renameSync(`${file}.tmp`, file);
  }

  /** Routes of the local stack itself: what the local Braze server holds for a user. */
  private async localRoute(method: string, url: URL, response: ServerResponse, config: SyncConfig): Promise<boolean> {
    const match = /^\/local\/braze\/users\/(?<id>[^/]+)$/.exec(url.pathname);
    if (method !== 'GET' || !match) return false;
    if (!this.braze) {
      send(response, 404, { error: 'the connector sends to a real Braze (BRAZE_REST_ENDPOINT); look the user up in its dashboard' });
      return true;
    }
    const by = url.searchParams.get('by') ?? 'external_id';
    if (by !== 'external_id' && by !== 'email' && by !== 'alias') {
      send(response, 400, { error: `by must be external_id, email or alias, not "${by}"` });
      return true;
    }
    const id = decodeURIComponent(match.groups!.id);
    const label = url.searchParams.get('label') ?? (by === 'alias' ? config.destinations[0]?.matching.aliasLabel : undefined);
    const user = this.braze.findUser(by, id, label ?? undefined) ?? (by === 'alias' ? this.braze.findUser(by, id) : undefined);
    if (!user) send(response, 404, { error: `the local Braze server holds no user with ${by} "${id}"` });
    else send(response, 200, { user });
    return true;
  }

  /**
   * Looks at the export folder: a file new or changed since its last upload, and still for one
   * look (a copy in progress is not half uploaded), is uploaded and announced as Event Grid would.
   * CSV files go before model.json, as CI writes them.
   */
  private lookAtExport(): Promise<void> {
    this.watching = this.watching.then(async () => {
      if (this.stopping || !this.app) return;
      const { exportDir } = this.options;
      const container = this.app.deps.storage.exportContainer;
      let files: string[];
      try {
        files = exportDirFiles(exportDir);
      } catch (error) {
        this.log.warn(`export: cannot read ${exportDir}: ${describeError(error)}`);
        return;
      }
      const ready: string[] = [];
      for (const name of files) {
        let stat;
        try {
          stat = statSync(path.join(exportDir, name));
        } catch {
          continue;
        }
        const before = this.seen.get(name);
        const still = before !== undefined && before.size === stat.size && before.mtimeMs === stat.mtimeMs;
        const now = { size: stat.size, mtimeMs: stat.mtimeMs, stillLooks: still ? before.stillLooks + 1 : 0, uploaded: still && before.uploaded };
        this.seen.set(name, now);
        // Still for two looks (a copy that pauses for a moment is not taken half written).
        if (!now.uploaded && now.stillLooks >= 2) ready.push(name);
      }
      // model.json starts the run: it waits while any other file is still being written or uploaded.
      const othersPending = files.some((name) => !name.endsWith('model.json') && !this.seen.get(name)?.uploaded && !ready.includes(name));
      for (const name of ready) {
        if (name.endsWith('model.json') && othersPending) continue;
        try {
          const md5 = await changedFile(container, exportDir, name);
          if (md5 !== undefined) {
            await uploadExportFile(container, exportDir, name, md5);
            this.log.info(`export: ${name} uploaded`);
            await exportBlobDrop(await blobCreatedEvent(container, name), functionContext('exportBlobDrop', this.log));
          }
          this.seen.get(name)!.uploaded = true;
        } catch (error) {
          this.log.warn(`export: ${name} not uploaded: ${describeError(error)}`);
        }
      }
    });
    return this.watching;
  }

  private schedule(setting: string, expression: string, fire: () => Promise<void>): void {
    if (this.stopping) return;
    const at = nextOccurrence(setting, expression);
    this.log.info(`timer: ${setting} "${expression}", next at ${at.toISOString()}`);
    const timer = setTimeout(
      () =>
        void fire()
          .catch((error: unknown) => this.log.error(`${setting}: ${describeError(error)}`))
          .finally(() => this.schedule(setting, expression, fire)),
      Math.max(0, at.getTime() - Date.now()),
    );
    this.timers.push(timer);
  }

  private async fireTimer(name: 'syncTimer' | 'reconcileTimer'): Promise<void> {
    const timer = { isPastDue: false, schedule: { adjustForDST: false }, scheduleStatus: { last: '', next: '', lastUpdated: '' } };
    if (name === 'syncTimer') await syncTimer(timer, functionContext(name, this.log));
    else await reconcileTimer(timer, functionContext(name, this.log));
  }

  /** A line when a run changes status, with its counts when it ends. */
  private async reportRuns(): Promise<void> {
    if (this.stopping || !this.app) return;
    let runs: RunRecord[];
    try {
      runs = await this.app.deps.runs.listRuns();
    } catch {
      return;
    }
    for (const run of runs) {
      if (this.runStatus.get(run.runId) === run.status) continue;
      this.runStatus.set(run.runId, run.status);
      const s = runSummary(run);
      const counts = `${s.rows.read} rows read: ${s.rows.delivered} delivered, ${s.rows.skippedUnchanged} unchanged, ${s.rows.rejected} rejected, ${s.rows.failed} failed`;
      const ended = ['completed', 'failed', 'halted', 'held', 'cancelled', 'superseded'].includes(run.status);
      this.log.info(`run ${run.runId} ${run.status}${ended ? ` — ${counts}${s.error ? `; ${s.error}` : ''}${s.note ? `; ${s.note}` : ''}` : ''}`);
    }
  }
}

/**
 * The next time an NCRONTAB expression fires, read as the settings check reads it (names as
 * numbers), in UTC as the host on Flex Consumption evaluates it.
 */
function nextOccurrence(setting: string, expression: string): Date {
  const cron = ncrontabAsCron(expression);
  try {
    if (cron === undefined) throw new Error('not an NCRONTAB expression');
    return CronExpressionParser.parse(cron, { currentDate: new Date(), tz: 'UTC' }).next().toDate();
  } catch (error) {
    throw new InvalidInputError(`${setting}: "${expression}" is not a schedule this host can follow (${(error as Error).message})`);
  }
}

if (require.main === module) {
  let options: ServeOptions | 'help';
  try {
    options = parseServeArgs(process.argv.slice(2), process.env);
  } catch (error) {
    console.error(error instanceof InvalidInputError ? error.message : describeError(error));
    process.exit(2);
  }
  if (options === 'help') {
    console.log(USAGE);
    process.exit(0);
  }
  const stamp = () => new Date().toISOString().slice(11, 19);
  const log: Logger = {
    info: (m) => console.log(`${stamp()} ${m}`),
    warn: (m) => console.warn(`${stamp()} ${m}`),
    error: (m) => console.error(`${stamp()} ${m}`),
    record: () => undefined,
  };
  const serve = new LocalServe(options, process.env, log);
  const stop = () => {
    log.info('stopping: the state stays for the next start');
    void serve.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  serve.start().catch(async (error: unknown) => {
    console.error(error instanceof InvalidInputError ? error.message : describeError(error));
    await serve.stop();
    process.exit(2);
  });
}
