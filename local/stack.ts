import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { InvocationContext } from '@azure/functions';
import { parseSyncConfig, type SyncConfig } from '../shared/config/syncConfig';
import { loadAppSettings } from '../shared/config/settings';
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
    const context = (name: string, meta: { dequeueCount: number; id: string; insertionTime: Date }) =>
      new InvocationContext({ functionName: name, invocationId: meta.id, triggerMetadata: { ...meta }, logHandler: () => undefined });
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

  async stop(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.stop()));
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

/** Uploads a folder laid out like the export container; answers the blob names in upload order (model.json last, as CI writes it). */
export async function uploadExportDir(deps: ConnectorDeps, dir: string): Promise<string[]> {
  const container = deps.storage.exportContainer;
  await container.createIfNotExists();
  const files: string[] = [];
  const walk = (folder: string) => {
    for (const name of readdirSync(folder).sort()) {
      const full = path.join(folder, name);
      if (statSync(full).isDirectory()) walk(full);
      else files.push(path.relative(dir, full).split(path.sep).join('/'));
    }
  };
  walk(dir);
  files.sort((a, b) => Number(a.endsWith('model.json')) - Number(b.endsWith('model.json')));
  for (const name of files) {
    if (!name.endsWith('model.json')) {
      await container.getBlockBlobClient(name).uploadFile(path.join(dir, name));
      continue;
    }
    const text = repointLocations(readFileSync(path.join(dir, name), 'utf8'), container.url);
    await container.getBlockBlobClient(name).upload(text, Buffer.byteLength(text));
  }
  return files;
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

export function readConfigFile(file: string): SyncConfig {
  return parseSyncConfig(readFileSync(file, 'utf8'), file);
}
