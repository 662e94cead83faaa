import { BrazeRetryableError } from '../errors';

/** What one attempt produced: an HTTP answer, or a transport failure (timeout, reset, refused). */
export interface AttemptResult {
  status?: number;
  /** Server-stated earliest retry time (epoch ms), from X-RateLimit-Reset / Retry-After. */
  retryAtMs?: number;
  transportError?: { code: string; message: string };
}

export interface RetryContext {
  /**
   * Retries already made for failures of this kind (0 on the first): 429s and transient failures
   * are counted apart, so a burst of throttling neither uses up nor grows the backoff.
   */
  retryCount: number;
  result: AttemptResult;
  nowMs: number;
}

export type RetryDecision = { kind: 'skip' } | { kind: 'retry'; delayMs: number } | { kind: 'giveUp'; reason: string };

export type RetryStrategy = (context: RetryContext) => RetryDecision;

export interface BackoffOptions {
  maxRetries: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  /** 0..1; tests pass a fixed value. */
  random?: () => number;
}

/** 429: wait for the server's own reset (or the fallback delay without one); counted apart from transient failures. */
export function throttlingStrategy(options: { maxRetries: number; fallbackDelayMs: number }): RetryStrategy {
  return ({ result, retryCount, nowMs }) => {
    if (result.status !== 429) return { kind: 'skip' };
    if (retryCount >= options.maxRetries) return { kind: 'giveUp', reason: `still throttled (429) after ${retryCount} retries` };
    const delayMs = result.retryAtMs !== undefined ? Math.max(0, result.retryAtMs - nowMs) : options.fallbackDelayMs;
    return { kind: 'retry', delayMs };
  };
}

export function isRetryableStatus(status: number): boolean {
  return status === 408 || (status >= 500 && status !== 501 && status !== 505);
}

/** 408, 5xx (not 501/505), timeouts and socket errors: exponential backoff with ±50% jitter, capped. */
export function exponentialBackoffStrategy(options: BackoffOptions): RetryStrategy {
  const random = options.random ?? Math.random;
  return ({ result, retryCount }) => {
    const transient = result.transportError !== undefined || (result.status !== undefined && isRetryableStatus(result.status));
    if (!transient) return { kind: 'skip' };
    if (retryCount >= options.maxRetries) {
      const what = result.transportError ? result.transportError.code : `HTTP ${result.status}`;
      return { kind: 'giveUp', reason: `${what} after ${retryCount} retries` };
    }
    const exponential = options.retryDelayMs * 2 ** retryCount;
    const jittered = exponential * (0.5 + random());
    return { kind: 'retry', delayMs: Math.min(options.maxRetryDelayMs, jittered) };
  };
}

export interface RetryLoopOptions<T> {
  attempt: () => Promise<{ result: AttemptResult; value: T }>;
  strategies: RetryStrategy[];
  sleep: (ms: number) => Promise<void>;
  now: () => number;
  /** Epoch ms after which this invocation must stop waiting and hand the work back. */
  deadlineMs: number;
  onRetry?: (info: { retryCount: number; delayMs: number; result: AttemptResult }) => void;
}

/**
 * The one loop that sleeps. Strategies only decide. A delay that would run past the deadline
 * becomes a BrazeRetryableError carrying when to try again, so the caller can re-enqueue instead of
 * holding an instance.
 */
export async function retryLoop<T>(options: RetryLoopOptions<T>): Promise<T> {
  const retries = { throttled: 0, transient: 0 };
  for (;;) {
    const { result, value } = await options.attempt();
    const failed =
      result.transportError !== undefined || (result.status !== undefined && (result.status === 429 || result.status === 408 || result.status >= 500));
    if (!failed) return value;
    const nowMs = options.now();
    const kind = result.status === 429 ? 'throttled' : 'transient';
    const retryCount = retries[kind];
    let decision: RetryDecision = { kind: 'skip' };
    for (const strategy of options.strategies) {
      decision = strategy({ retryCount, result, nowMs });
      if (decision.kind !== 'skip') break;
    }
    const status = result.status ?? 0;
    const describe = result.transportError ? `${result.transportError.code}: ${result.transportError.message}` : `HTTP ${status}`;
    if (decision.kind === 'skip') return value;
    if (decision.kind === 'giveUp') throw new BrazeRetryableError(`Braze request failed: ${decision.reason} (${describe})`, status, result.retryAtMs);
    if (nowMs + decision.delayMs > options.deadlineMs) {
      throw new BrazeRetryableError(
        `Braze request deferred: ${describe}; next try in ${Math.ceil(decision.delayMs)} ms is past this invocation's budget`,
        status,
        nowMs + decision.delayMs,
      );
    }
    options.onRetry?.({ retryCount, delayMs: decision.delayMs, result });
    retries[kind] += 1;
    await options.sleep(decision.delayMs);
  }
}
