import { exponentialBackoffStrategy, isRetryableStatus, retryLoop, throttlingStrategy, type AttemptResult } from '../../shared/braze/retry';
import { BrazeRetryableError } from '../../shared/errors';

describe('retry strategies', () => {
  const backoff = exponentialBackoffStrategy({ maxRetries: 3, retryDelayMs: 100, maxRetryDelayMs: 1000, random: () => 0.5 });
  const throttling = throttlingStrategy({ maxRetries: 5, fallbackDelayMs: 250 });

  it('retries 408 and 5xx but not 501 or 505, and nothing else', () => {
    expect([408, 500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 403, 404, 413, 429, 501, 505].some(isRetryableStatus)).toBe(false);
  });

  it('waits until the server says for 429, and skips everything else', () => {
    expect(throttling({ retryCount: 0, nowMs: 1_000, result: { status: 429, retryAtMs: 3_500 } })).toEqual({ kind: 'retry', delayMs: 2_500 });
    expect(throttling({ retryCount: 0, nowMs: 1_000, result: { status: 429 } })).toEqual({ kind: 'retry', delayMs: 250 });
    expect(throttling({ retryCount: 0, nowMs: 1_000, result: { status: 503 } })).toEqual({ kind: 'skip' });
    expect(throttling({ retryCount: 5, nowMs: 0, result: { status: 429 } })).toMatchObject({ kind: 'giveUp' });
  });

  it('backs off exponentially, capped, for 5xx and socket errors', () => {
    const delays = [0, 1, 2].map((retryCount) => backoff({ retryCount, nowMs: 0, result: { status: 503 } }));
    expect(delays).toEqual([
      { kind: 'retry', delayMs: 100 },
      { kind: 'retry', delayMs: 200 },
      { kind: 'retry', delayMs: 400 },
    ]);
    const capped = exponentialBackoffStrategy({ maxRetries: 20, retryDelayMs: 100, maxRetryDelayMs: 1000, random: () => 0.99 });
    expect(capped({ retryCount: 10, nowMs: 0, result: { transportError: { code: 'ECONNRESET', message: 'reset' } } })).toEqual({
      kind: 'retry',
      delayMs: 1000,
    });
    expect(backoff({ retryCount: 3, nowMs: 0, result: { status: 500 } })).toMatchObject({ kind: 'giveUp' });
    expect(backoff({ retryCount: 0, nowMs: 0, result: { status: 400 } })).toEqual({ kind: 'skip' });
  });

  it('jitters within ±50%', () => {
    const low = exponentialBackoffStrategy({ maxRetries: 3, retryDelayMs: 100, maxRetryDelayMs: 10_000, random: () => 0 });
    const high = exponentialBackoffStrategy({ maxRetries: 3, retryDelayMs: 100, maxRetryDelayMs: 10_000, random: () => 0.999 });
    expect(low({ retryCount: 1, nowMs: 0, result: { status: 500 } })).toEqual({ kind: 'retry', delayMs: 100 });
    expect((high({ retryCount: 1, nowMs: 0, result: { status: 500 } }) as { delayMs: number }).delayMs).toBeCloseTo(299.8, 0);
  });
});

describe('the retry loop (fake timers)', () => {
  jest.setTimeout(10_000);
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  const clock = { now: () => Date.now(), sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)) };
  const strategies = [
    throttlingStrategy({ maxRetries: 5, fallbackDelayMs: 250 }),
    exponentialBackoffStrategy({ maxRetries: 3, retryDelayMs: 100, maxRetryDelayMs: 1000, random: () => 0.5 }),
  ];

  function scripted(results: AttemptResult[]) {
    let calls = 0;
    return {
      attempt: async () => {
        const result = results[Math.min(calls, results.length - 1)];
        calls += 1;
        return { result, value: result.status };
      },
      get calls() {
        return calls;
      },
    };
  }

  it('honours X-RateLimit-Reset first, then backs off for a 503, then succeeds', async () => {
    const start = Date.now();
    const script = scripted([{ status: 429, retryAtMs: start + 2_000 }, { status: 503 }, { status: 201 }]);
    const done = retryLoop({ attempt: script.attempt, strategies, ...clock, deadlineMs: start + 60_000 });
    await jest.advanceTimersByTimeAsync(1_999);
    expect(script.calls).toBe(1);
    await jest.advanceTimersByTimeAsync(1);
    expect(script.calls).toBe(2);
    // The 503 is the first transient failure: the 429 before it does not grow the backoff (100 ms × 2^0).
    await jest.advanceTimersByTimeAsync(99);
    expect(script.calls).toBe(2);
    await jest.advanceTimersByTimeAsync(1);
    await expect(done).resolves.toBe(201);
    expect(script.calls).toBe(3);
    expect(Date.now() - start).toBe(2_100);
  });

  it('gives up after maxRetries with a retryable error', async () => {
    const script = scripted([{ transportError: { code: 'ECONNRESET', message: 'socket hang up' } }]);
    const done = retryLoop({ attempt: script.attempt, strategies, ...clock, deadlineMs: Date.now() + 60_000 });
    const assertion = expect(done).rejects.toThrow(/ECONNRESET after 3 retries/);
    await jest.advanceTimersByTimeAsync(100 + 200 + 400);
    await assertion;
    expect(script.calls).toBe(4);
  });

  it('hands the wait back instead of sleeping past the invocation budget', async () => {
    const start = Date.now();
    const script = scripted([{ status: 429, retryAtMs: start + 30_000 }]);
    const done = retryLoop({ attempt: script.attempt, strategies, ...clock, deadlineMs: start + 5_000 });
    await expect(done).rejects.toBeInstanceOf(BrazeRetryableError);
    await expect(retryLoop({ attempt: script.attempt, strategies, ...clock, deadlineMs: start + 5_000 })).rejects.toMatchObject({
      retryAtMs: start + 30_000,
      status: 429,
    });
    expect(Date.now()).toBe(start);
  });

  it('does not retry a 400 or a 501', async () => {
    for (const status of [400, 501]) {
      const script = scripted([{ status }]);
      await expect(retryLoop({ attempt: script.attempt, strategies, ...clock, deadlineMs: Date.now() + 1000 })).resolves.toBe(status);
      expect(script.calls).toBe(1);
    }
  });
});
