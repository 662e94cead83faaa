import { BrazeRetryableError } from '../../shared/errors';
import { RateLimitPacer } from '../../shared/braze/pacer';
import { readRateLimit } from '../../shared/braze/rateLimitHeaders';

/**
 * A simulated Braze limit (fixed windows; optionally a burst limit per 3 s that the headers do not
 * show, as on hourly contracts) and N instances, each with its own pacer, on one fake clock. Each
 * instance does what the client does: release with the answer's headers, and on a 429 ask the
 * pacer when to go again and wait until then.
 */
async function simulate(options: {
  instances: number;
  requestsPerInstance: number;
  limit: number;
  windowMs: number;
  latencyMs: number;
  reserveShare: number;
  burst?: number;
  configuredBurst?: number;
  concurrency?: number;
}) {
  const start = 1_700_000_000_000;
  let now = start;
  const timers: { at: number; resolve: () => void }[] = [];
  const clock = {
    now: () => now,
    sleep: (ms: number) => new Promise<void>((resolve) => timers.push({ at: now + Math.max(0, ms), resolve })),
  };
  const used = new Map<number, number>();
  const burstUsed = new Map<number, number>();
  let sent = 0;
  let throttled = 0;
  let burstThrottled = 0;
  const perWindow = new Map<number, number>();
  const perBurstWindow = new Map<number, number>();
  const server = () => {
    const window = Math.floor(now / options.windowMs);
    const burstWindow = Math.floor(now / 3_000);
    sent += 1;
    const count = (used.get(window) ?? 0) + 1;
    const headers = (remaining: number) => ({
      'x-ratelimit-limit': String(options.limit),
      'x-ratelimit-remaining': String(Math.max(0, remaining)),
      'x-ratelimit-reset': String(Math.ceil(((window + 1) * options.windowMs) / 1000)),
    });
    if (count > options.limit) {
      used.set(window, count);
      throttled += 1;
      return { status: 429, headers: headers(0) };
    }
    const burstCount = (burstUsed.get(burstWindow) ?? 0) + 1;
    burstUsed.set(burstWindow, burstCount);
    if (options.burst !== undefined && burstCount > options.burst) {
      throttled += 1;
      burstThrottled += 1;
      return { status: 429, headers: headers(options.limit - count + 1) };
    }
    used.set(window, count);
    perWindow.set(window, (perWindow.get(window) ?? 0) + 1);
    perBurstWindow.set(burstWindow, (perBurstWindow.get(burstWindow) ?? 0) + 1);
    return { status: 201, headers: headers(options.limit - count) };
  };
  const instance = async () => {
    const pacer = new RateLimitPacer({ reserveShare: options.reserveShare, clock, burstLimit: options.configuredBurst });
    let done = 0;
    const worker = async () => {
      while (done < options.requestsPerInstance) {
        done += 1;
        await pacer.acquire();
        const answer = server();
        await clock.sleep(options.latencyMs);
        const observation = readRateLimit(answer.headers, now);
        if (answer.status === 429) {
          pacer.release({ limit: observation.limit, remaining: observation.remaining });
          const retryAt = pacer.throttled(observation);
          done -= 1; // retried
          await clock.sleep(retryAt - now);
        } else {
          pacer.release(observation);
        }
      }
    };
    await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker));
  };
  const all = Promise.all(Array.from({ length: options.instances }, instance));
  let finished = false;
  void all.then(() => (finished = true));
  while (!finished) {
    await new Promise((r) => setImmediate(r));
    if (timers.length === 0) continue;
    timers.sort((a, b) => a.at - b.at);
    const next = timers.shift()!;
    now = Math.max(now, next.at);
    next.resolve();
  }
  const windows = [...perWindow.values()];
  return { sent, throttled, burstThrottled, windows, maxBurst: Math.max(...perBurstWindow.values()), elapsedMs: now - start };
}

describe('pacing several instances against one workspace limit', () => {
  it('keeps 429s at or under 1% with four instances sharing 3,000 requests / 3 s', async () => {
    const result = await simulate({ instances: 4, requestsPerInstance: 3_000, limit: 3_000, windowMs: 3_000, latencyMs: 20, reserveShare: 0 });
    expect(result.throttled / result.sent).toBeLessThanOrEqual(0.01);
    // And it is not timid: full windows use most of the limit.
    const full = result.windows.slice(1, -1);
    expect(Math.min(...full)).toBeGreaterThan(3_000 * 0.8);
  }, 60_000);

  it('leaves the configured share of the limit to other tools', async () => {
    const result = await simulate({ instances: 2, requestsPerInstance: 2_000, limit: 1_000, windowMs: 1_000, latencyMs: 5, reserveShare: 0.2 });
    expect(Math.max(...result.windows)).toBeLessThanOrEqual(800 + 16);
    expect(result.throttled).toBe(0);
  }, 60_000);
});

describe('pacing against an hourly contract with a burst limit', () => {
  const HOUR = 3_600_000;
  it('spreads the hour over the window, steps back one burst window on a burst 429 instead of an hour, and keeps 429s at or under 1%', async () => {
    // Four instances, 20,000 requests in all, against 24,000 an hour and 60 per 3 s, the burst unknown to the pacer.
    const result = await simulate({
      instances: 4,
      requestsPerInstance: 5_000,
      limit: 24_000,
      windowMs: HOUR,
      latencyMs: 30,
      reserveShare: 0,
      burst: 60,
      concurrency: 16,
    });
    expect(result.throttled / result.sent).toBeLessThanOrEqual(0.01);
    // Within the hour the budget allows (the run starts somewhere in an hourly window, so two of them at most).
    expect(result.elapsedMs).toBeLessThan(2 * HOUR);
    expect(Math.max(...result.windows)).toBeLessThanOrEqual(24_000);
  }, 60_000);

  it('never exceeds a configured burst limit, even with the hour nearly over and most of its budget left', async () => {
    // The window resets in a minute with 24,000 requests left: spreading them alone would send 400 a second.
    const result = await simulate({
      instances: 1,
      requestsPerInstance: 3_000,
      limit: 24_000,
      windowMs: 60_000,
      latencyMs: 10,
      reserveShare: 0.1,
      burst: 300,
      configuredBurst: 300,
      concurrency: 32,
    });
    expect(result.burstThrottled).toBe(0);
    expect(result.maxBurst).toBeLessThanOrEqual(300);
    // And not timid: at least 80% of the reserve-adjusted burst rate.
    expect(3_000 / (result.elapsedMs / 3_000)).toBeGreaterThan(300 * 0.9 * 0.8);
  }, 60_000);

  it('a burst 429 pauses the sender for one burst window and names that as the time to retry, not the hourly reset', () => {
    let clockMs = 1_700_000_000_000;
    const clock = { now: () => clockMs, sleep: async (ms: number) => void (clockMs += ms) };
    const pacer = new RateLimitPacer({ reserveShare: 0, clock });
    const hourlyReset = clockMs + 50 * 60_000;
    expect(pacer.throttled({ limit: 24_000, remaining: 20_000, resetAtMs: hourlyReset })).toBe(clockMs + 3_000);
    expect(pacer.delayMs()).toBeGreaterThanOrEqual(3_000);
    expect(pacer.delayMs()).toBeLessThan(3_100);
    // With a Retry-After sooner than that, the server's word wins.
    clockMs += 5_000;
    expect(pacer.throttled({ limit: 24_000, remaining: 20_000, resetAtMs: clockMs + 1_000 })).toBe(clockMs + 1_000);
    // An exhausted window is still a wait for its reset.
    expect(pacer.throttled({ limit: 24_000, remaining: 0, resetAtMs: hourlyReset })).toBe(hourlyReset);
  });
});

describe('a sender budget', () => {
  const fakeClock = () => {
    const clock = {
      ms: 1_700_000_000_000,
      now: () => clock.ms,
      sleep: async (ms: number): Promise<void> => void (clock.ms += ms),
    };
    return clock;
  };

  it('is never overrun waiting for answers in flight: the waiter gives up at the deadline, not after the window resets', async () => {
    const clock = fakeClock();
    const pacer = new RateLimitPacer({ reserveShare: 0, clock, defaultLimit: 5, defaultWindowMs: 3_000 });
    // Five requests go and none has answered: the window may hold more than the pacer assumes.
    for (let i = 0; i < 5; i++) await pacer.acquire();
    const deadlineMs = clock.ms + 500;
    await expect(pacer.acquire(deadlineMs)).rejects.toBeInstanceOf(BrazeRetryableError);
    // It looked again until the deadline and no later (the window resets at +3 s: it did not wait for it).
    expect(clock.ms).toBe(deadlineMs);
  });

  it('looks again as soon as an answer arrives, so a larger limit it reveals is used within the budget', async () => {
    const clock = fakeClock();
    const pacer = new RateLimitPacer({ reserveShare: 0, clock, defaultLimit: 5, defaultWindowMs: 3_000 });
    for (let i = 0; i < 5; i++) await pacer.acquire();
    // From here a wait for the window's reset never ends by itself: only an answer can cut it short.
    const step = clock.sleep;
    clock.sleep = (ms) => (ms < 100 ? step(ms) : new Promise<void>(() => undefined));
    let sixth = false;
    const waiting = pacer.acquire(clock.now() + 500).then(() => (sixth = true));
    await new Promise((r) => setImmediate(r));
    expect(sixth).toBe(false);
    pacer.release({ limit: 3_000, remaining: 2_990, resetAtMs: clock.now() + 3_000 });
    await waiting;
    expect(sixth).toBe(true);
  });

  it('takes the first answer of a window as fact, not the budget it assumed when the last window ended', async () => {
    const clock = fakeClock();
    const pacer = new RateLimitPacer({ reserveShare: 0, clock, defaultLimit: 5, defaultWindowMs: 3_000 });
    await pacer.acquire();
    // Braze says the window (ending about when the pacer guessed) has far more left than assumed.
    clock.ms += 20;
    pacer.release({ limit: 3_000, remaining: 2_994, resetAtMs: clock.ms + 2_900 });
    expect(pacer.delayMs()).toBeLessThan(10);
    // Within the window the smallest remaining stays the freshest: a late answer does not raise it.
    for (let i = 0; i < 3; i++) await pacer.acquire();
    pacer.release({ limit: 3_000, remaining: 0, resetAtMs: clock.ms + 2_800 });
    pacer.release({ limit: 3_000, remaining: 2_993, resetAtMs: clock.ms + 2_800 });
    expect(pacer.delayMs()).toBeGreaterThan(2_000);
  });

  it('takes no slot once the deadline has passed, even a free one', async () => {
    const clock = fakeClock();
    const pacer = new RateLimitPacer({ reserveShare: 0, clock, defaultLimit: 5, defaultWindowMs: 3_000 });
    const deadlineMs = clock.ms + 500;
    await pacer.acquire(deadlineMs);
    // A slow answer or a wait for a connection took the sender past its budget.
    clock.ms += 600;
    await expect(pacer.acquire(deadlineMs)).rejects.toMatchObject({ status: 429 });
  });
});

describe('rate-limit headers', () => {
  it('reads Reset as epoch seconds, or as seconds remaining when too small to be an epoch', () => {
    expect(readRateLimit({ 'x-ratelimit-reset': '1700000003', 'x-ratelimit-remaining': '12', 'x-ratelimit-limit': '3000' }, 1_700_000_000_000)).toEqual({
      limit: 3000,
      remaining: 12,
      resetAtMs: 1_700_000_003_000,
      windowResetAtMs: 1_700_000_003_000,
    });
    expect(readRateLimit({ 'X-RateLimit-Reset': '2' }, 1_000)).toEqual({ limit: undefined, remaining: undefined, resetAtMs: 3_000, windowResetAtMs: 3_000 });
    expect(readRateLimit({ 'x-ratelimit-retry-after': '5', 'x-ratelimit-reset': '1700000003' }, 0).resetAtMs).toBe(5_000);
  });

  it('keep a reset in the past as the window it names, while the time to retry is never before now', () => {
    const nowMs = 1_700_000_010_000;
    expect(readRateLimit({ 'x-ratelimit-reset': '1700000003', 'x-ratelimit-remaining': '40000' }, nowMs)).toMatchObject({
      resetAtMs: nowMs,
      windowResetAtMs: 1_700_000_003_000,
    });
    // A Retry-After is when to go again, not which window the budget belongs to.
    expect(readRateLimit({ 'retry-after': '2', 'x-ratelimit-reset': '1700000060' }, nowMs)).toMatchObject({
      resetAtMs: nowMs + 2_000,
      windowResetAtMs: 1_700_000_060_000,
    });
  });
});

describe('answers from an ended window', () => {
  const HOUR = 3_600_000;
  const fakeClock = () => {
    const clock = {
      ms: 1_700_000_000_000,
      now: () => clock.ms,
      sleep: async (ms: number): Promise<void> => void (clock.ms += ms),
    };
    return clock;
  };
  /** What the client reads from Braze's answer: the headers as Braze sends them, parsed at the clock's now. */
  const answer = (clock: { ms: number }, limit: number, remaining: number, windowResetAtMs: number) =>
    readRateLimit(
      { 'x-ratelimit-limit': String(limit), 'x-ratelimit-remaining': String(remaining), 'x-ratelimit-reset': String(Math.ceil(windowResetAtMs / 1000)) },
      clock.ms,
    );

  /**
   * An hourly contract of 250,000 with a fifth kept for other tools (50,000): the pacer has seen the
   * hour that ends in ten minutes, and the clock has moved two seconds past its end.
   */
  async function pastAnHourlyWindow() {
    const clock = fakeClock();
    const pacer = new RateLimitPacer({ reserveShare: 0.2, clock });
    const endedResetAtMs = clock.ms + 10 * 60_000;
    await pacer.acquire();
    pacer.release(answer(clock, 250_000, 120_000, endedResetAtMs));
    clock.ms = endedResetAtMs + 2_000;
    return { clock, pacer, endedResetAtMs, nextResetAtMs: endedResetAtMs + HOUR };
  }

  it('never lower the next hourly window when the late answer comes after a fresh one', async () => {
    const { clock, pacer, endedResetAtMs, nextResetAtMs } = await pastAnHourlyWindow();
    await pacer.acquire();
    await pacer.acquire();
    pacer.release(answer(clock, 250_000, 249_989, nextResetAtMs));
    pacer.release(answer(clock, 250_000, 40_000, endedResetAtMs));
    // 199,989 usable over the hour: a slot every 18 ms, not a wait for the next reset.
    expect(pacer.delayMs()).toBeLessThan(50);
    await expect(pacer.acquire(clock.ms + 1_000)).resolves.toBeUndefined();
  });

  it('never lower the next hourly window when the late answer comes first', async () => {
    const { clock, pacer, endedResetAtMs, nextResetAtMs } = await pastAnHourlyWindow();
    await pacer.acquire();
    await pacer.acquire();
    pacer.release(answer(clock, 250_000, 40_000, endedResetAtMs));
    // Until the new window answers, the pacer assumes it is fresh: the ended one's 40,000 is not its budget.
    expect(pacer.delayMs()).toBeLessThan(50);
    pacer.release(answer(clock, 250_000, 249_989, nextResetAtMs));
    expect(pacer.delayMs()).toBeLessThan(50);
    await expect(pacer.acquire(clock.ms + 1_000)).resolves.toBeUndefined();
  });

  it('never lower the next window when this clock runs behind Braze and the ended reset still looks ahead', async () => {
    const { clock, pacer, endedResetAtMs, nextResetAtMs } = await pastAnHourlyWindow();
    // Braze has begun the next hour, but by this clock the last one ends in 1.5 s.
    clock.ms = endedResetAtMs - 1_500;
    await pacer.acquire();
    await pacer.acquire();
    pacer.release(answer(clock, 250_000, 249_989, nextResetAtMs));
    pacer.release(answer(clock, 250_000, 40_000, endedResetAtMs));
    expect(pacer.delayMs()).toBeLessThan(50);
    await expect(pacer.acquire(clock.ms + 1_000)).resolves.toBeUndefined();
  });

  it.each([
    ['after', false],
    ['before', true],
  ])('never lower the next window of the default 3-second contract when the late answer comes %s the fresh one', async (_order, lateFirst) => {
    const clock = fakeClock();
    const pacer = new RateLimitPacer({ reserveShare: 0.2, clock });
    const endedResetAtMs = clock.ms + 2_000;
    await pacer.acquire();
    pacer.release(answer(clock, 3_000, 1_500, endedResetAtMs));
    clock.ms = endedResetAtMs + 100;
    await pacer.acquire();
    await pacer.acquire();
    const fresh = answer(clock, 3_000, 2_990, endedResetAtMs + 3_000);
    const late = answer(clock, 3_000, 5, endedResetAtMs);
    for (const observation of lateFirst ? [late, fresh] : [fresh, late]) pacer.release(observation);
    // 2,390 usable over 2.9 s: a slot about every millisecond, not a wait for the reset.
    expect(pacer.delayMs()).toBeLessThan(10);
    await expect(pacer.acquire(clock.ms + 500)).resolves.toBeUndefined();
  });

  it('a 429 of the ended window neither zeroes the next one nor names its reset as the time to retry', async () => {
    const { clock, pacer, endedResetAtMs, nextResetAtMs } = await pastAnHourlyWindow();
    await pacer.acquire();
    await pacer.acquire();
    pacer.release(answer(clock, 250_000, 249_989, nextResetAtMs));
    // As the client does: the budget from the 429 first, then when to go again.
    const throttled = answer(clock, 250_000, 0, endedResetAtMs);
    pacer.release({ limit: throttled.limit, remaining: throttled.remaining });
    expect(pacer.throttled(throttled)).toBeLessThanOrEqual(clock.ms);
    expect(pacer.delayMs()).toBeLessThan(50);
    await expect(pacer.acquire(clock.ms + 1_000)).resolves.toBeUndefined();
  });

  it('a burst 429 lowers the budget of the window its reset names, and of no other', async () => {
    const { clock, pacer, endedResetAtMs, nextResetAtMs } = await pastAnHourlyWindow();
    await pacer.acquire();
    pacer.release(answer(clock, 250_000, 249_989, nextResetAtMs));
    const late = answer(clock, 250_000, 10, endedResetAtMs);
    pacer.release({ limit: late.limit, remaining: late.remaining });
    pacer.throttled(late);
    // It met the burst limit, so the next slot is a burst window away, but not the next hour's reset.
    await expect(pacer.acquire(clock.ms + 5_000)).resolves.toBeUndefined();
    // Other tools have spent the current hour down to 30,000, under the 50,000 kept for them.
    const current = answer(clock, 250_000, 30_000, nextResetAtMs);
    pacer.release({ limit: current.limit, remaining: current.remaining });
    pacer.throttled(current);
    clock.ms += 3_000;
    expect(pacer.delayMs()).toBeGreaterThan(HOUR / 2);
  });

  it('a 429 of the current window still waits for its reset', async () => {
    const { clock, pacer, nextResetAtMs } = await pastAnHourlyWindow();
    await pacer.acquire();
    pacer.release(answer(clock, 250_000, 249_989, nextResetAtMs));
    const throttled = answer(clock, 250_000, 0, nextResetAtMs);
    pacer.release({ limit: throttled.limit, remaining: throttled.remaining });
    expect(pacer.throttled(throttled)).toBe(nextResetAtMs);
    await expect(pacer.acquire(clock.ms + 1_000)).rejects.toMatchObject({ status: 429 });
  });
});
