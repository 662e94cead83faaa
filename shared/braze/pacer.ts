import { BrazeRetryableError } from '../errors';
import { BRAZE_DEFAULT_RATE_LIMIT_REQUESTS, BRAZE_DEFAULT_RATE_LIMIT_WINDOW_MS } from '../brazeApi';
import type { Clock } from '../clock';
import type { RateLimitObservation } from './rateLimitHeaders';

/** A waiting request looks again at least this often: answers arriving meanwhile change the picture. */
const MAX_PACING_STEP_MS = 1_000;
/** Reset headers have one-second resolution; resets closer than this are the same window. */
const SAME_WINDOW_TOLERANCE_MS = 1_000;
/** Braze's burst limits (hourly contracts) count requests per three seconds. */
export const BURST_WINDOW_MS = 3_000;
/** A learnt burst spacing eases off by this factor per quiet stretch, so one 429 does not slow a run for good. */
const BURST_EASE_FACTOR = 0.9;
const BURST_QUIET_MS = 4 * BURST_WINDOW_MS;

export interface PacerOptions {
  /** Share of the workspace limit left for other tools (0–0.9). */
  reserveShare: number;
  clock: Clock;
  defaultLimit?: number;
  defaultWindowMs?: number;
  /** The contract's burst limit (requests per 3 s for the workspace), when it has one and it is known. */
  burstLimit?: number;
}

/** The sender hands its batch back, to come again when the next slot is due. */
function noSlotBefore(now: number, wait: number): BrazeRetryableError {
  const next = Math.max(0, Math.ceil(wait));
  return new BrazeRetryableError(`Braze's rate limit leaves no request before this invocation's budget ends (next in ${next} ms)`, 429, now + next);
}

/**
 * Paces requests of one process against a rate limit shared by every instance of the app.
 *
 * Braze's answer carries the workspace's remaining budget and when it resets. Each sender spends
 * what is left (minus the reserve and its own requests in flight) evenly over the time left:
 * rate = usable / timeToReset. When N instances do this, the budget decays geometrically instead of
 * running out, so the group never hits the wall however many instances run, and at reset all start
 * again from the fresh budget in step instead of storming.
 *
 * Hourly contracts add a burst limit per 3 s that the headers do not show: the hourly window's
 * Reset is up to an hour away, so spreading its budget is slow enough almost always, but not near
 * the end of the hour. A 429 that leaves budget in the window (remaining > 0) is such a burst: the
 * pacer pauses for one burst window — not until the hourly reset — and spaces its own requests at
 * 80% of the rate that met the 429, easing off again while no 429 comes. A configured burst limit
 * sets the spacing from the start.
 */
export class RateLimitPacer {
  private limit: number;
  private readonly windowMs: number;
  private remaining: number;
  private resetAtMs: number;
  private inFlight = 0;
  /** `remaining` and `resetAtMs` come from an answer, not from the assumption of a fresh window. */
  private observed = false;
  private nextSendAtMs = 0;
  private queue: Promise<void> = Promise.resolve();
  private answered: { promise: Promise<void>; resolve: () => void } | undefined;
  /** Least time between two requests of this process: the burst limit's share, configured or learnt. */
  private burstSpacingMs: number;
  private readonly configuredBurstSpacingMs: number;
  private pausedUntilMs = 0;
  private lastBurstAtMs = 0;
  /** Send times within the last burst window, oldest first (to know the rate a burst 429 met). */
  private readonly recentSends: number[] = [];

  constructor(private readonly options: PacerOptions) {
    this.limit = options.defaultLimit ?? BRAZE_DEFAULT_RATE_LIMIT_REQUESTS;
    this.windowMs = options.defaultWindowMs ?? BRAZE_DEFAULT_RATE_LIMIT_WINDOW_MS;
    this.remaining = this.limit;
    this.resetAtMs = options.clock.now() + this.windowMs;
    this.configuredBurstSpacingMs = options.burstLimit ? BURST_WINDOW_MS / Math.max(1, options.burstLimit * (1 - options.reserveShare)) : 0;
    this.burstSpacingMs = this.configuredBurstSpacingMs;
  }

  /** How long until the next request may go, given what the pacer knows now. */
  delayMs(): number {
    const now = this.options.clock.now();
    if (now >= this.resetAtMs) {
      // The window we knew about is over; until an answer says otherwise, assume a fresh one.
      this.remaining = this.limit;
      this.resetAtMs = now + this.windowMs;
      this.observed = false;
    }
    if (this.pausedUntilMs > now) return this.pausedUntilMs - now + Math.random() * 50;
    if (this.burstSpacingMs > this.configuredBurstSpacingMs && now - this.lastBurstAtMs > BURST_QUIET_MS) {
      this.burstSpacingMs = Math.max(this.configuredBurstSpacingMs, this.burstSpacingMs * BURST_EASE_FACTOR);
      this.lastBurstAtMs = now;
    }
    const reserve = this.options.reserveShare * this.limit;
    const usable = this.remaining - reserve - this.inFlight;
    const timeLeftMs = Math.max(this.resetAtMs - now, 1);
    if (usable < 1) return timeLeftMs + Math.random() * 50;
    const spacingMs = Math.max(timeLeftMs / usable, this.burstSpacingMs);
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
        const now = this.options.clock.now();
        // The budget is spent: no request starts, even into a free slot (a slow answer or a wait
        // for a connection can bring a sender here late).
        if (now >= deadlineMs) throw noSlotBefore(now, wait);
        if (wait <= 0) break;
        // Answers still in flight may show more budget than assumed (a new window, the real limit):
        // only give up on what the last answers said — unless the window is spent, which no
        // answer of the same window can undo. Waiting for them never runs past the deadline.
        if (now + wait > deadlineMs && (this.inFlight === 0 || this.windowSpent())) throw noSlotBefore(now, wait);
        const step = this.options.clock.sleep(Math.min(wait, MAX_PACING_STEP_MS, deadlineMs - now));
        await (this.inFlight > 0 ? Promise.race([step, this.nextAnswer()]) : step);
      }
      const now = this.options.clock.now();
      this.nextSendAtMs = now;
      this.inFlight += 1;
      this.recentSends.push(now);
      while (this.recentSends.length > 0 && this.recentSends[0] <= now - BURST_WINDOW_MS) this.recentSends.shift();
    });
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /** Settles when the next request in flight gets its answer (or none). */
  private nextAnswer(): Promise<void> {
    if (!this.answered) {
      let resolve = () => {};
      const promise = new Promise<void>((settle) => (resolve = settle));
      this.answered = { promise, resolve };
    }
    return this.answered.promise;
  }

  /** Nothing left of the known window beyond the reserve: only its reset brings more. */
  private windowSpent(): boolean {
    return this.options.clock.now() < this.resetAtMs && this.remaining - this.options.reserveShare * this.limit < 1;
  }

  /** The request got an answer (or none); its headers update the shared picture. */
  release(observation: RateLimitObservation | undefined): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    this.learn(observation);
    // A waiter looks again now, not at the end of its step: the answer may have opened its slot.
    const answered = this.answered;
    this.answered = undefined;
    answered?.resolve();
  }

  private learn(observation: RateLimitObservation | undefined): void {
    if (!observation) return;
    const now = this.options.clock.now();
    if (observation.limit !== undefined && observation.limit > 0) this.limit = observation.limit;
    const resetAtMs = observation.windowResetAtMs ?? observation.resetAtMs;
    // A budget that names no window (a 429's, whose reset the client keeps for throttled()) cannot
    // be placed in one, and a late answer of an ended window says nothing of the current one: an
    // hourly window's stale remaining would otherwise hold every sender back for the whole next hour.
    if (observation.remaining === undefined || resetAtMs === undefined || this.endedWindow(resetAtMs, now)) return;
    // Answers arrive out of order: within one window the smallest remaining is the freshest. What
    // the pacer assumed when the last window ended is no answer: the first real one replaces it.
    const sameWindow = this.observed && Math.abs(resetAtMs - this.resetAtMs) < SAME_WINDOW_TOLERANCE_MS;
    this.remaining = sameWindow ? Math.min(this.remaining, observation.remaining) : observation.remaining;
    this.resetAtMs = resetAtMs;
    this.observed = true;
  }

  /**
   * The window resetting at `resetAtMs` is over: its reset has passed, or an answer of a later
   * window has come (which also covers a clock behind Braze's, where the ended reset still looks ahead).
   */
  private endedWindow(resetAtMs: number, now: number): boolean {
    return resetAtMs <= now || (this.observed && resetAtMs <= this.resetAtMs - SAME_WINDOW_TOLERANCE_MS);
  }

  /**
   * A 429, with what its headers said; answers when the request may go again. With budget left
   * in the window it was a burst: pause one burst window (or the server's Retry-After, if
   * sooner) and slow down. Otherwise nothing is left until the window's reset — unless that window
   * has ended.
   */
  throttled(observation: RateLimitObservation): number {
    const now = this.options.clock.now();
    // The client releases a 429 with its budget alone (a Retry-After is no window's reset): here the
    // budget is placed in the window its own reset names, if it names one.
    this.learn({ remaining: observation.remaining, windowResetAtMs: observation.windowResetAtMs });
    if (observation.remaining !== undefined && observation.remaining > 0) {
      const pauseUntil = Math.min(observation.resetAtMs ?? Number.POSITIVE_INFINITY, now + BURST_WINDOW_MS);
      if (pauseUntil > this.pausedUntilMs) {
        // Only the first 429 of a burst sets the pace: the ones in flight with it met the same wall.
        const metRate = this.recentSends.filter((at) => at > now - BURST_WINDOW_MS).length;
        this.burstSpacingMs = Math.max(this.burstSpacingMs, BURST_WINDOW_MS / Math.max(1, metRate * 0.8));
        this.pausedUntilMs = pauseUntil;
      }
      this.lastBurstAtMs = now;
      return this.pausedUntilMs;
    }
    // A 429 of an ended window spent that window, not this one: the request may go again now, paced
    // as usual, instead of every sender waiting for the next window's reset.
    const windowResetAtMs = observation.windowResetAtMs ?? observation.resetAtMs;
    if (windowResetAtMs !== undefined && this.endedWindow(windowResetAtMs, now)) return now;
    this.remaining = 0;
    this.observed = true;
    if (observation.resetAtMs !== undefined) this.resetAtMs = Math.max(this.resetAtMs, observation.resetAtMs);
    return this.resetAtMs;
  }
}
