/** Time as the retry loop and the pacer see it; tests drive it with jest's fake timers. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

/** setTimeout fires at once for delays beyond 2^31 − 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.min(MAX_TIMER_MS, Math.max(0, Number.isFinite(ms) ? ms : 0)))),
};
