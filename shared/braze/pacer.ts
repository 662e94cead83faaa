import { BrazeRetryableError } from '../errors';
import { BRAZE_DEFAULT_RATE_LIMIT_REQUESTS, BRAZE_DEFAULT_RATE_LIMIT_WINDOW_MS } from './constants';
import type { Clock } from './clock';
import type { RateLimitObservation } from './rateLimitHeaders';

/** A waiting request looks again at least this often: answers arriving meanwhile change the picture. */
const MAX_PACING_STEP_MS = 1_000;
/** Reset headers have one-second resolution; resets closer than this are the same window. */
const SAME_WINDOW_TOLERANCE_MS = 1_000;

export interface PacerOptions {
  /** Share of the workspace limit left for other tools (0–0.9). */
  reserveShare: number;
  clock: Clock;
  defaultLimit?: number;
  defaultWindowMs?: number;
}

/**
 * Paces requests of one process against a rate limit shared by every instance of the app.
 *
 * Braze's answer carries the workspace's remaining budget and when it resets. Each sender spends
 * what is left (minus the reserve and its own requests in flight) evenly over the time left:
 * rate = usable / timeToReset. When N instances do this, the budget decays geometrically instead of
 * running out, so the group never hits the wall however many instances run, and at reset all start
 * again from the fresh budget in step instead of storming.
 */
export class RateLimitPacer {
  private limit: number;
  private readonly windowMs: number;
  private remaining: number;
  private resetAtMs: number;
  private inFlight = 0;
  private nextSendAtMs = 0;
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: PacerOptions) {
    this.limit = options.defaultLimit ?? BRAZE_DEFAULT_RATE_LIMIT_REQUESTS;
    this.windowMs = options.defaultWindowMs ?? BRAZE_DEFAULT_RATE_LIMIT_WINDOW_MS;
    this.remaining = this.limit;
    this.resetAtMs = options.clock.now() + this.windowMs;
  }

  /** How long until the next request may go, given what the pacer knows now. */
  delayMs(): number {
    const now = this.options.clock.now();
    if (now >= this.resetAtMs) {
      // The window we knew about is over; until an answer says otherwise, assume a fresh one.
      this.remaining = this.limit;
      this.resetAtMs = now + this.windowMs;
    }
    const reserve = this.options.reserveShare * this.limit;
    const usable = this.remaining - reserve - this.inFlight;
    const timeLeftMs = Math.max(this.resetAtMs - now, 1);
    if (usable < 1) return timeLeftMs + Math.random() * 50;
    const spacingMs = timeLeftMs / usable;
    return Math.max(0, this.nextSendAtMs + spacingMs - now);
  }

  /**
   * Waits for this request's slot, or throws a BrazeRetryableError (with when to come back) if the
   * slot lies beyond `deadlineMs`: a sender hands its batch back rather than hold an instance
   * through a long reset. Callers queue in order so one slow waiter cannot be overtaken forever.
   */
  acquire(deadlineMs = Number.POSITIVE_INFINITY): Promise<void> {
    const turn = this.queue.then(async () => {
      for (;;) {
        const wait = this.delayMs();
        if (wait <= 0) break;
        const now = this.options.clock.now();
        // Answers still in flight may show more budget than assumed: only give up on what the last answers said.
        if (now + wait > deadlineMs && this.inFlight === 0) {
          throw new BrazeRetryableError(
            `Braze's rate limit leaves no request before this invocation's budget ends (next in ${Math.ceil(wait)} ms)`,
            429,
            now + wait,
          );
        }
        await this.options.clock.sleep(Math.min(wait, MAX_PACING_STEP_MS));
      }
      this.nextSendAtMs = this.options.clock.now();
      this.inFlight += 1;
    });
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /** The request got an answer (or none); its headers update the shared picture. */
  release(observation: RateLimitObservation | undefined): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    if (!observation) return;
    const now = this.options.clock.now();
    if (observation.limit !== undefined && observation.limit > 0) this.limit = observation.limit;
    if (observation.remaining === undefined) return;
    const resetAtMs = observation.resetAtMs;
    if (resetAtMs === undefined || resetAtMs <= now) {
      this.remaining = Math.min(this.remaining, observation.remaining);
      return;
    }
    // Answers arrive out of order: within one window the smallest remaining is the freshest.
    const sameWindow = Math.abs(resetAtMs - this.resetAtMs) < SAME_WINDOW_TOLERANCE_MS;
    this.remaining = sameWindow ? Math.min(this.remaining, observation.remaining) : observation.remaining;
    this.resetAtMs = resetAtMs;
  }

  /** A 429: nothing is left until the server's reset. */
  throttled(resetAtMs: number | undefined): void {
    this.remaining = 0;
    if (resetAtMs !== undefined) this.resetAtMs = Math.max(this.resetAtMs, resetAtMs);
  }
}
