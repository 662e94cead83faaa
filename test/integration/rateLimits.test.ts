import { requestSync } from '../../shared/sync/startSync';
import { expectCompletedWith } from '../helpers/expectations';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { startTestStack, TEST_API_KEY, type TestStack } from '../helpers/testStack';

describe('rate limits by contract', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('on an hourly contract with a burst limit, a run shares each window with another tool, hands batches back while the window is spent, and ends with at most 1% 429s', async () => {
    // A scaled-down hour: 30 requests per 6 s window, at most 30 per 3 s. The pacer is told the burst, not the window.
    const windowMs = 6_000;
    stack = await startTestStack({
      braze: { rateLimit: 30, rateWindowMs: windowMs, burstLimit: 30, latencyMs: 5 },
      env: { BRAZE_BURST_LIMIT: '30', SENDER_BUDGET_MS: '3000', BRAZE_REQUEST_TIMEOUT_MS: '2000' },
    });
    const deps = stack.app.deps;
    const profiles = makeProfiles(1, 2250);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    // Another tool of the workspace spends every other window down to the connector's reserve as soon as
    // it opens, for as long as the run goes: the run meets a spent window seconds before its reset however
    // slowly this machine starts it (before, one window spent ahead of the run was met only by a run that
    // started quickly), and has the windows between to itself.
    const braze = stack.braze;
    let running = true;
    let toolRefused = 0;
    const otherTool = (async () => {
      while (running) {
        const window = Math.floor(Date.now() / windowMs);
        for (let remaining = Number.POSITIVE_INFINITY; running && window % 2 === 0 && remaining > 3;) {
          const answer = await fetch(`${braze.url}/users/track`, {
            method: 'POST',
            headers: { Authorization: `Bearer ${TEST_API_KEY}`, 'Content-Type': 'application/json' },
            body: JSON.stringify({ attributes: [] }),
          });
          if (answer.status !== 201) toolRefused += 1;
          remaining = Number(answer.headers.get('x-ratelimit-remaining') ?? 0);
        }
        await new Promise((resolve) => setTimeout(resolve, (window + 1) * windowMs - Date.now() + 20));
      }
    })();
    const outcome = await requestSync(deps, { trigger: 'http' });
    const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 120_000 }).finally(() => {
      running = false;
    });
    await otherTool;

    expectCompletedWith(run, profiles.size, stack.braze, expectedBraze([profiles]));
    // The connector kept to what was left: the tool's requests were all taken.
    expect(toolRefused).toBe(0);
    const stats = stack.braze.stats;
    const throttled = stats.byStatus[429] ?? 0;
    expect(throttled / stats.requests).toBeLessThanOrEqual(0.01);
    // How fast the run goes against the limit is the benchmark's figure (ceilingRatio, npm run bench), not a wall-clock bound here.
    for (const used of stats.perWindow.values()) expect(used).toBeLessThanOrEqual(30);
    // While a window's budget was spent, senders handed their batches back for seconds instead of waiting in an instance.
    const handedBack = stack.log.lines.map((line) => /handed back for (\d+) s \(Braze's rate limit/.exec(line)).filter((m) => m !== null);
    if (!handedBack.some((m) => Number(m[1]) >= 2))
      console.log(
        stack.log.lines
          .filter((l) => /handed|429|batch/.test(l))
          .slice(0, 60)
          .join('\n'),
        [...stats.perWindow.entries()],
      );
    expect(handedBack.some((m) => Number(m[1]) >= 2)).toBe(true);
  }, 150_000);

  it('on a 50-object contract, a workspace that refuses 75 is learnt from with one refused request, and one told its limit is never refused', async () => {
    // Monthly Active Users (CY 24-25): "Each request may batch up to 50 updates" (braze-docs post_user_track.md).
    for (const told of [undefined, '50']) {
      stack = await startTestStack({ braze: { maxObjectsPerRequest: 50 }, env: told ? { BRAZE_OBJECTS_PER_REQUEST: told } : {} });
      const deps = stack.app.deps;
      const profiles = makeProfiles(1, 3000);
      await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
      const outcome = await requestSync(deps, { trigger: 'http' });
      const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
      expectCompletedWith(run, profiles.size, stack.braze, expectedBraze([profiles]));
      const refused = stack.braze.stats.byStatus[400] ?? 0;
      const accepted = stack.braze.stats.byStatus[201] ?? 0;
      // A batch tries one request alone until the workspace has taken a full one: at most one refusal per
      // batch sent before the limit was learnt (sending 75 at a time, every request of 75 was refused).
      expect(refused).toBeLessThanOrEqual(told ? 0 : run.batchesEnqueued);
      // Full requests of 50: no halving into 38s and 37s (a batch's last request may be short).
      expect(accepted).toBeLessThanOrEqual(Math.ceil(profiles.size / 50) + run.batchesEnqueued);
      if (!told) expect(stack.log.lines.some((line) => line.includes('this workspace gets at most 50 per request from now on'))).toBe(true);
      await stack.stop();
      stack = undefined;
    }
  }, 150_000);
});
