import { RateLimitPacer } from '../../shared/braze/pacer';
import { readRateLimit } from '../../shared/braze/rateLimitHeaders';

/** A simulated Braze limit (fixed windows) and N instances, each with its own pacer, on one fake clock. */
async function simulate(options: { instances: number; requestsPerInstance: number; limit: number; windowMs: number; latencyMs: number; reserveShare: number }) {
  let now = 1_700_000_000_000;
  const timers: { at: number; resolve: () => void }[] = [];
  const clock = {
    now: () => now,
    sleep: (ms: number) => new Promise<void>((resolve) => timers.push({ at: now + Math.max(0, ms), resolve })),
  };
  const used = new Map<number, number>();
  let sent = 0;
  let throttled = 0;
  const perWindow = new Map<number, number>();
  const server = () => {
    const window = Math.floor(now / options.windowMs);
    const count = (used.get(window) ?? 0) + 1;
    used.set(window, count);
    sent += 1;
    const headers = {
      'x-ratelimit-limit': String(options.limit),
      'x-ratelimit-remaining': String(Math.max(0, options.limit - count)),
      'x-ratelimit-reset': String(Math.ceil(((window + 1) * options.windowMs) / 1000)),
    };
    if (count > options.limit) throttled += 1;
    else perWindow.set(window, (perWindow.get(window) ?? 0) + 1);
    return { status: count > options.limit ? 429 : 201, headers };
  };
  const instance = async () => {
    const pacer = new RateLimitPacer({ reserveShare: options.reserveShare, clock });
    let done = 0;
    const worker = async () => {
      while (done < options.requestsPerInstance) {
        done += 1;
        await pacer.acquire();
        const answer = server();
        await clock.sleep(options.latencyMs);
        const observation = readRateLimit(answer.headers, now);
        pacer.release(observation);
        if (answer.status === 429) {
          pacer.throttled(observation.resetAtMs);
          done -= 1; // retried
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
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
  return { sent, throttled, windows, elapsedMs: now - 1_700_000_000_000 };
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

describe('rate-limit headers', () => {
  it('reads Reset as epoch seconds, or as seconds remaining when too small to be an epoch', () => {
    expect(readRateLimit({ 'x-ratelimit-reset': '1700000003', 'x-ratelimit-remaining': '12', 'x-ratelimit-limit': '3000' }, 1_700_000_000_000)).toEqual({
      limit: 3000,
      remaining: 12,
      resetAtMs: 1_700_000_003_000,
    });
    expect(readRateLimit({ 'X-RateLimit-Reset': '2' }, 1_000)).toEqual({ limit: undefined, remaining: undefined, resetAtMs: 3_000 });
    expect(readRateLimit({ 'x-ratelimit-retry-after': '5', 'x-ratelimit-reset': '1700000003' }, 0).resetAtMs).toBe(5_000);
  });
});
