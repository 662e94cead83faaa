import { BrazeRetryableError, BrazeUnreachableError } from '../errors';

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

/**
 * Socket errors that say the endpoint is wrong rather than unwell: the name does not exist
 * (ENOTFOUND, the resolver's answer) or nothing listens at the port (ECONNREFUSED). Either can also
 * be a blip — a Braze host restarting refuses for a moment — so they are retried like the others;
 * only when an invocation's retries end on them does sending stop (retryLoop). EAI_AGAIN is the
 * resolver not answering, which says nothing of the name; resets, timeouts and unreachable networks
 * come and go with the network.
 */
export function isEndpointFault(code: string): code is BrazeUnreachableError['code'] {
  return code === 'ENOTFOUND' || code === 'ECONNREFUSED';
}

/** What cannot be reached, named as a person fixes it: the host for a name, host and port for a refusal. */
export function unreachable(endpoint: string, code: BrazeUnreachableError['code']): BrazeUnreachableError {
  const url = new URL(endpoint);
  if (code === 'ENOTFOUND') return new BrazeUnreachableError(`cannot resolve Braze host ${url.hostname} (ENOTFOUND)`, code);
  const port = url.port || (url.protocol === 'http:' ? '80' : '443');
  return new BrazeUnreachableError(`cannot connect to Braze at ${url.hostname}:${port} (ECONNREFUSED: nothing listens there)`, code);
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
  /** The base URL the attempts go to, named when it cannot be reached. */
  endpoint: string;
  onRetry?: (info: { retryCount: number; delayMs: number; result: AttemptResult }) => void;
}

/**
 * The one loop that sleeps. Strategies only decide. A delay that would run past the deadline
 * becomes a BrazeRetryableError carrying when to try again, so the caller can re-enqueue instead of
 * holding an instance. Retries given up (all of them spent) with every attempt failed on an
 * endpoint fault become a BrazeUnreachableError instead: another invocation would meet the same
 * wrong host or port. An attempt that failed otherwise (an HTTP answer, a reset) shows that
 * something is there, and the retries end as usual.
 */
export async function retryLoop<T>(options: RetryLoopOptions<T>): Promise<T> {
  const retries = { throttled: 0, transient: 0 };
  let onlyEndpointFaults = true;
  for (;;) {
    const { result, value } = await options.attempt();
    const failed =
      result.transportError !== undefined || (result.status !== undefined && (result.status === 429 || result.status === 408 || result.status >= 500));
    if (!failed) return value;
    const fault = result.transportError && isEndpointFault(result.transportError.code) ? result.transportError.code : undefined;
    onlyEndpointFaults &&= fault !== undefined;
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
    // Only retries given up on count: a budget that ends them early (late in a sender's time) may
    // have seen a blip of a few seconds, and the batch comes back to meet the endpoint again.
    if (decision.kind === 'giveUp' && fault !== undefined && onlyEndpointFaults) throw unreachable(options.endpoint, fault);
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
