import { exponentialBackoffStrategy, isEndpointFault, isRetryableStatus, retryLoop, throttlingStrategy, type AttemptResult } from '../../shared/braze/retry';
import { BrazeRetryableError, BrazeUnreachableError } from '../../shared/errors';

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

  it('takes a host that does not resolve, or a port nothing listens on, for a wrong endpoint; every other socket error for a passing one', () => {
    expect(['ENOTFOUND', 'ECONNREFUSED'].every(isEndpointFault)).toBe(true);
    // EAI_AGAIN: the resolver did not answer (it says nothing of the name); resets, timeouts and
    // routing failures come and go with the network.
    expect(['EAI_AGAIN', 'ECONNRESET', 'ETIMEDOUT', 'ECONNABORTED', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ERR_NETWORK'].some(isEndpointFault)).toBe(false);
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

  const clock = {
    now: () => Date.now(),
    sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
    endpoint: 'https://rest.iad-03.braze.com',
  };
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

  const notFound: AttemptResult = { transportError: { code: 'ENOTFOUND', message: 'getaddrinfo ENOTFOUND rest.iad-99.braze.invalid' } };
  const refused: AttemptResult = { transportError: { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:9' } };

  it('retries a host that does not resolve like any socket error, then stops with an error naming the host that is not retried', async () => {
    const script = scripted([notFound]);
    const done = retryLoop({ attempt: script.attempt, strategies, ...clock, endpoint: 'https://rest.iad-99.braze.invalid', deadlineMs: Date.now() + 60_000 });
    const assertion = expect(done).rejects.toThrow(new BrazeUnreachableError('cannot resolve Braze host rest.iad-99.braze.invalid (ENOTFOUND)', 'ENOTFOUND'));
    await jest.advanceTimersByTimeAsync(100 + 200 + 400);
    await assertion;
    expect(script.calls).toBe(4);
    await expect(done).rejects.toMatchObject({ name: 'BrazeUnreachableError', retryable: false, code: 'ENOTFOUND' });
  });

  it("names host and port when nothing listens there, the scheme's port when the endpoint names none", async () => {
    for (const [endpoint, where] of [
      ['http://127.0.0.1:9', '127.0.0.1:9'],
      ['https://rest.iad-03.braze.com', 'rest.iad-03.braze.com:443'],
      ['http://[::1]:8080/base', '[::1]:8080'],
    ]) {
      const done = retryLoop({ attempt: scripted([refused]).attempt, strategies, ...clock, endpoint, deadlineMs: Date.now() + 60_000 });
      const assertion = expect(done).rejects.toThrow(`cannot connect to Braze at ${where} (ECONNREFUSED: nothing listens there)`);
      await jest.advanceTimersByTimeAsync(700);
      await assertion;
      await expect(done).rejects.toBeInstanceOf(BrazeUnreachableError);
    }
  });

  it("hands back, not halts, when the invocation's budget ends the retries before they are spent (a blip late in a sender's time)", async () => {
    const start = Date.now();
    const script = scripted([refused]);
    const done = retryLoop({ attempt: script.attempt, strategies, ...clock, deadlineMs: start + 250 });
    const assertion = expect(done).rejects.toMatchObject({ name: 'BrazeRetryableError', retryable: true });
    await jest.advanceTimersByTimeAsync(300);
    await assertion;
    expect(script.calls).toBe(2);
  });

  it('sends once the host resolves again within the retries', async () => {
    const script = scripted([notFound, refused, { status: 201 }]);
    const done = retryLoop({ attempt: script.attempt, strategies, ...clock, deadlineMs: Date.now() + 60_000 });
    await jest.advanceTimersByTimeAsync(300);
    await expect(done).resolves.toBe(201);
  });

  it('keeps a temporary DNS failure, and a refusal from an endpoint that answered, retryable', async () => {
    const eaiAgain: AttemptResult = { transportError: { code: 'EAI_AGAIN', message: 'getaddrinfo EAI_AGAIN rest.iad-03.braze.com' } };
    for (const results of [[eaiAgain], [{ status: 503 }, refused], [notFound, eaiAgain]]) {
      const done = retryLoop({ attempt: scripted(results).attempt, strategies, ...clock, deadlineMs: Date.now() + 60_000 });
      const assertion = expect(done).rejects.toMatchObject({ name: 'BrazeRetryableError', retryable: true });
      await jest.advanceTimersByTimeAsync(700);
      await assertion;
    }
  });
});
