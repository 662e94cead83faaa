import { isConflict } from './storageErrors';

const MAX_ATTEMPTS = 200;

/**
 * After a lost race, wait a random, growing moment (capped at 200 ms) so the contenders spread out
 * instead of colliding again at once.
 */
function conflictPauseMs(attempt: number): number {
  return Math.random() * Math.min(200, 5 * 2 ** Math.min(attempt, 6));
}

/**
 * Optimistic concurrency, once for every caller: `attempt` reads, decides and writes on a
 * condition (ETag, insert-if-absent); a conflict (409/412) sends it round again with fresh reads.
 */
export async function retryOnConflict<T>(what: string, attempt: () => Promise<T>, sleep: (ms: number) => Promise<void>): Promise<T> {
  for (let n = 0; n < MAX_ATTEMPTS; n++) {
    try {
      return await attempt();
    } catch (error) {
      if (!isConflict(error)) throw error;
      await sleep(conflictPauseMs(n));
    }
  }
  throw new Error(`${what}: still losing to concurrent writers after ${MAX_ATTEMPTS} attempts`);
}
