import './quietTestMode';
import { consoleLogger } from '../shared/log';
import { LocalFunctionApp } from './stack';

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
