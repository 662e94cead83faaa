import './quietTestMode';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { consoleLogger } from '../shared/log';
import { LocalFunctionApp } from './stack';

/** A CPU-profile request from the process that started this worker over IPC (the benchmark). */
type ProfileMessage = { cpuProfile: 'start' } | { cpuProfile: 'stop'; file: string };

/**
 * The benchmark profiles each refresh apart: V8's profiler started and stopped on its word, the
 * profile written where it says. `--cpu-prof` would give one profile of the whole life.
 */
function answerProfileRequests(): void {
  if (!process.send) return;
  const session = new Session();
  session.connect();
  const post = <T>(method: string): Promise<T> =>
    new Promise((resolve, reject) => session.post(method, (error, result) => (error ? reject(error) : resolve(result as T))));
  process.on('message', (message: ProfileMessage) => {
    void (async () => {
      if (message.cpuProfile === 'start') {
        await post('Profiler.enable');
        await post('Profiler.start');
        process.send!({ cpuProfileStarted: true });
      } else if (message.cpuProfile === 'stop') {
        const { profile } = await post<{ profile: unknown }>('Profiler.stop');
        writeFileSync(message.file, JSON.stringify(profile));
        process.send!({ cpuProfileWritten: message.file });
      }
    })();
  });
}

/**
 * The queue-triggered functions as a long-running process, against the storage and Braze named by
 * the environment: what a Functions instance does, for crash and scale-out tests.
 */
async function main(): Promise<void> {
  const lockSeconds = Number(process.env.LOCAL_LOCK_SECONDS ?? '60');
  const app = new LocalFunctionApp({
    env: process.env,
    log: consoleLogger,
    lockSeconds,
    hostSettings: { maxPollingInterval: '00:00:00.200', visibilityTimeout: '00:00:00' },
  });
  await app.start();
  answerProfileRequests();
  console.log('worker ready');
  const stop = async () => {
    await app.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
