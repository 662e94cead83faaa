import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export interface AzuriteInstance {
  connectionString: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

const ACCOUNT = 'devstoreaccount1';
const KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteOptions {
  debugLog?: string;
  /** Keep the data in this folder (kept between starts); in memory when absent. */
  location?: string;
  /** The blob port; queue and table take the next two. Free ports when absent or 0. */
  basePort?: number;
  /**
   * In a process group of its own: a Ctrl-C on the terminal then reaches only the parent, which
   * stops its hosts before it stops Azurite. The parent kills it when it exits.
   */
  detached?: boolean;
}

/** Azurite's own default ports, which `UseDevelopmentStorage=true` points at. */
export const AZURITE_DEFAULT_BASE_PORT = 10000;

/**
 * Starts Azurite, in memory on free ports unless told otherwise. `--skipApiVersionCheck` because
 * current SDKs speak a newer API version than Azurite knows; telemetry off because this machine
 * has no internet.
 */
export async function startAzurite(options: AzuriteOptions = {}): Promise<AzuriteInstance> {
  const bin = path.join(path.dirname(require.resolve('azurite/package.json')), 'dist', 'src', 'azurite.js');
  const base = options.basePort ?? 0;
  const args = [
    bin,
    ...(options.location ? ['--location', options.location] : ['--inMemoryPersistence']),
    '--skipApiVersionCheck',
    '--disableTelemetry',
    '--silent',
    '--blobPort',
    String(base),
    '--queuePort',
    String(base && base + 1),
    '--tablePort',
    String(base && base + 2),
    '--blobHost',
    '127.0.0.1',
    '--queueHost',
    '127.0.0.1',
    '--tableHost',
    '127.0.0.1',
  ];
  if (options.debugLog) args.push('--debug', options.debugLog);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: options.detached ?? false });
  if (options.detached) process.once('exit', () => child.kill('SIGKILL'));
  const ports = await new Promise<{ blob: number; queue: number; table: number }>((resolve, reject) => {
    const found: Record<string, number> = {};
    let output = '';
    const timer = setTimeout(() => reject(new Error(`Azurite did not start within 30 s:\n${output}`)), 30_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      for (const match of output.matchAll(/Azurite (Blob|Queue|Table) service is successfully listening at http:\/\/127\.0\.0\.1:(\d+)/g)) {
        found[match[1].toLowerCase()] = Number(match[2]);
      }
      if (found.blob && found.queue && found.table) {
        clearTimeout(timer);
        resolve({ blob: found.blob, queue: found.queue, table: found.table });
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`Azurite exited with ${code}:\n${output}`));
    });
  });
  child.stdout!.resume();
  child.removeAllListeners('exit');
  const connectionString =
    `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${KEY};` +
    `BlobEndpoint=http://127.0.0.1:${ports.blob}/${ACCOUNT};QueueEndpoint=http://127.0.0.1:${ports.queue}/${ACCOUNT};TableEndpoint=http://127.0.0.1:${ports.table}/${ACCOUNT};`;
  return {
    connectionString,
    process: child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
      }),
  };
}
