import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { ContainerClient } from '@azure/storage-blob';
import path from 'node:path';
import { InvocationContext } from '@azure/functions';
import { segmentAttribute, type SyncConfig } from '../shared/config/syncConfig';
import { isNotFound } from '../shared/storage/storageErrors';
import { loadAppSettings } from '../shared/config/settings';
import { InvalidInputError } from '../shared/errors';
import type { Logger } from '../shared/log';
import { createConnector, ensureReady } from '../shared/sync/connector';
import type { ConnectorDeps } from '../shared/runs/connectorDeps';
import { isTerminal, type RunRecord } from '../shared/runs/runRecord';
import { brazeSender } from '../functions/brazeSender';
import { brazeSenderPoison } from '../functions/brazeSenderPoison';
import { runWorker } from '../functions/runWorker';
import { useConnector } from '../functions/connector';
import { QueueHost, readHostQueueSettings, type HostQueueSettings } from './queueHost';

export const PROJECT_ROOT = path.resolve(__dirname, '..', __dirname.includes(`${path.sep}dist${path.sep}`) ? '..' : '');

/**
 * An invocation context for a function called without the host, whose `context.log`/`warn`/`error`
 * reach the local stack's log as the host's would reach its console (dropping them hides why a
 * trigger started nothing).
 */
export function functionContext(
  name: string,
  log: Logger,
  options: { invocationId?: string; triggerMetadata?: Record<string, unknown>; warningsOnly?: boolean } = {},
): InvocationContext {
  return new InvocationContext({
    functionName: name,
    invocationId: options.invocationId ?? `local-${Date.now()}`,
    triggerMetadata: options.triggerMetadata,
    logHandler: (level, ...args) => {
      const text = args.map((a) => (typeof a === 'string' ? a : a instanceof Error ? a.message : JSON.stringify(a))).join(' ');
      if (level === 'error' || level === 'critical') log.error(text);
      else if (level === 'warning') log.warn(text);
      else if (!options.warningsOnly && level !== 'trace' && level !== 'debug') log.info(text);
    },
  });
}

/** Where `npm run serve` says it is running, in the state container of the storage it uses. */
export const SERVE_HEARTBEAT_BLOB = 'local/serve.json';
/** A heartbeat older than this is of a serve that stopped without saying so. */
export const SERVE_HEARTBEAT_STALE_MS = 20_000;

/** The base URL of an `npm run serve` running on this storage now, if one is. */
export async function serveOnStorage(deps: ConnectorDeps): Promise<string | undefined> {
  try {
    const beat = JSON.parse((await deps.storage.stateContainer.getBlobClient(SERVE_HEARTBEAT_BLOB).downloadToBuffer()).toString('utf8')) as {
      url: string;
      at: number;
    };
    return Date.now() - beat.at < SERVE_HEARTBEAT_STALE_MS ? beat.url : undefined;
  } catch {
    return undefined;
  }
}

export interface StackOptions {
  env: Record<string, string | undefined>;
  config?: SyncConfig;
  log: Logger;
  hostSettings?: Partial<HostQueueSettings>;
  /** How long a received message stays hidden before another worker may take it (the host's lease). */
  lockSeconds?: number;
}

/**
 * The function app without the Functions host: the connector the functions use, and the queue
 * triggers driven by QueueHost with host.json's settings. Handlers are the real function handlers.
 */
export class LocalFunctionApp {
  readonly deps: ConnectorDeps;
  readonly hosts: QueueHost[] = [];

  constructor(private readonly options: StackOptions) {
    const settings = loadAppSettings(options.env);
    this.deps = createConnector({ env: options.env, settings, config: options.config, log: options.log });
    useConnector(this.deps);
  }

  async start(): Promise<void> {
    await ensureReady(this.deps);
    const settings = { ...readHostQueueSettings(PROJECT_ROOT), ...this.options.hostSettings };
    const storage = this.deps.storage;
    // Queue functions say little worth a line each; their warnings and errors are what a person needs.
    const context = (name: string, meta: { dequeueCount: number; id: string; insertionTime: Date }) =>
      functionContext(name, this.options.log, { invocationId: meta.id, triggerMetadata: { ...meta }, warningsOnly: true });
    const onError = (name: string) => (error: unknown, dequeueCount: number) => {
      const message = `${name} failed (dequeue ${dequeueCount}): ${error instanceof Error ? error.message : String(error)}`;
      this.options.log.warn(message);
    };
    const lockSeconds = this.options.lockSeconds ?? 60;
    this.hosts.push(
      new QueueHost(storage.runQueue, storage.runPoisonQueue, (text, meta) => runWorker(text, context('runWorker', meta)), {
        settings: { ...settings, batchSize: 4, newBatchThreshold: 1 },
        lockSeconds,
        onError: onError('runWorker'),
      }),
      new QueueHost(storage.batchQueue, storage.batchPoisonQueue, (text, meta) => brazeSender(text, context('brazeSender', meta)), {
        settings,
        lockSeconds,
        onError: onError('brazeSender'),
      }),
      new QueueHost(storage.batchPoisonQueue, undefined, (text, meta) => brazeSenderPoison(text, context('brazeSenderPoison', meta)), {
        settings,
        lockSeconds,
        onError: onError('brazeSenderPoison'),
      }),
    );
    for (const host of this.hosts) host.start();
  }

  /** Stops taking queue messages; the connector stays usable for reading what the runs left. */
  async stopHosts(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.stop()));
  }

  async stop(): Promise<void> {
    await this.stopHosts();
    useConnector(undefined);
  }

  /** Waits until each run is completed, failed, superseded or halted, reporting progress. */
  async waitForRuns(
    runIds: string[],
    options: { timeoutMs: number; onProgress?: (runs: RunRecord[]) => void; progressEveryMs?: number },
  ): Promise<RunRecord[]> {
    const deadline = Date.now() + options.timeoutMs;
    let lastProgress = 0;
    for (;;) {
      const runs = await Promise.all(runIds.map(async (id) => (await this.deps.runs.get(id))!));
      const settled = runs.every((r) => r && (isTerminal(r.status) || r.status === 'halted' || r.status === 'held'));
      if (options.onProgress && (settled || Date.now() - lastProgress >= (options.progressEveryMs ?? 1000))) {
        options.onProgress(runs);
        lastProgress = Date.now();
      }
      if (settled) return runs;
      if (Date.now() > deadline) throw new Error(`runs did not finish within ${options.timeoutMs} ms: ${runs.map((r) => `${r.runId}=${r.status}`).join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** The files of a folder laid out like the export container, as blob names, model.json last (as CI writes it). */
export function exportDirFiles(dir: string): string[] {
  const files: string[] = [];
  const walk = (folder: string) => {
    for (const name of readdirSync(folder).sort()) {
      const full = path.join(folder, name);
      if (statSync(full).isDirectory()) walk(full);
      else files.push(path.relative(dir, full).split(path.sep).join('/'));
    }
  };
  walk(dir);
  return files.sort((a, b) => Number(a.endsWith('model.json')) - Number(b.endsWith('model.json')));
}

/**
 * Uploads one file of an export folder to its blob; a model.json is re-pointed at the container.
 * The file's own MD5 (from changedFile) goes into the blob's metadata, so a later look can tell
 * whether it changed.
 */
export async function uploadExportFile(container: ContainerClient, dir: string, name: string, md5: string): Promise<void> {
  const file = path.join(dir, name);
  const metadata = { sourcemd5: md5 };
  if (!name.endsWith('model.json')) {
    await container.getBlockBlobClient(name).uploadFile(file, { metadata });
    return;
  }
  const text = repointLocations(readFileSync(file, 'utf8'), container.url);
  await container.getBlockBlobClient(name).upload(text, Buffer.byteLength(text), { metadata: { ...metadata, pointsat: container.url } });
}

/** A file's MD5 in hex, streamed (partitions run to gigabytes). */
export async function fileMd5(file: string): Promise<string> {
  const hash = createHash('md5');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Uploads a folder laid out like the export container, but only the files that differ from their
 * blob (on storage that is kept, an unchanged file is not written again: CI does not rewrite what
 * it did not export, and a new ETag would make a new refresh of it). Answers the blob names
 * uploaded, in upload order (model.json last, as CI writes it).
 */
export async function uploadExportDir(deps: ConnectorDeps, dir: string): Promise<string[]> {
  const container = deps.storage.exportContainer;
  await container.createIfNotExists();
  const uploaded: string[] = [];
  for (const name of exportDirFiles(dir)) {
    const md5 = await changedFile(container, dir, name);
    if (md5 === undefined) continue;
    await uploadExportFile(container, dir, name, md5);
    uploaded.push(name);
  }
  return uploaded;
}

/**
 * The file's MD5 when its blob does not hold it as it is now (by the MD5 its upload recorded), or
 * a model.json does not point at this container (storage kept on disk comes back on other ports
 * with `--port 0`); undefined when the blob is the file. Hashed once, for the upload to record.
 */
export async function changedFile(container: ContainerClient, dir: string, name: string): Promise<string | undefined> {
  const md5 = await fileMd5(path.join(dir, name));
  let metadata: Record<string, string>;
  try {
    metadata = (await container.getBlobClient(name).getProperties()).metadata ?? {};
  } catch (error) {
    if (isNotFound(error)) return md5;
    throw error;
  }
  if (name.endsWith('model.json') && metadata.pointsat !== container.url) return md5;
  return metadata.sourcemd5 === md5 ? undefined : md5;
}

/**
 * An export copied from another account keeps model.json's partition URIs on that account, which
 * the connector refuses to read. The copy uploaded here is pointed at this container, as CI would
 * have written it for it: everything from the `CustomerInsights_*` folder on stays.
 */
function repointLocations(text: string, containerUrl: string): string {
  let model: { entities?: { partitions?: { location?: unknown }[] }[] };
  try {
    model = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text) as typeof model;
  } catch {
    return text;
  }
  for (const entity of model.entities ?? []) {
    for (const partition of entity.partitions ?? []) {
      if (typeof partition.location !== 'string') continue;
      const at = partition.location.indexOf('/CustomerInsights_');
      if (at >= 0) partition.location = `${containerUrl}${partition.location.slice(at)}`;
    }
  }
  return JSON.stringify(model, null, 2);
}

/** The mapping config: --config, else the file SYNC_CONFIG_FILE names, else the sample's; a missing or broken one is an error naming it. */
export function configFileOf(flag: string | undefined, env: NodeJS.ProcessEnv): { file: string; source: string } {
  const file = path.resolve(flag ?? (env.SYNC_CONFIG_FILE || path.join(PROJECT_ROOT, 'sample', 'config.json')));
  const source = flag !== undefined ? '--config' : env.SYNC_CONFIG_FILE ? 'SYNC_CONFIG_FILE' : 'the sample config';
  if (!existsSync(file) || !statSync(file).isFile()) throw new InvalidInputError(`${source}: no file "${file}"`);
  return { file, source };
}

/** The local Braze server's segments as CI's export asks for them: each defined by its membership attribute. */
export function localBrazeSegments(config: SyncConfig): Record<string, string> {
  return Object.fromEntries(config.destinations.flatMap((d) => d.segments.map((g) => [g.brazeSegmentId, segmentAttribute(g)])));
}
