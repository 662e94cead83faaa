import { requestSync } from '../../shared/sync/startSync';
import type { RunRecord } from '../../shared/runs/runRecord';
import { rowsAccountedFor } from '../../shared/runs/runRecord';
import { startTestStack as startStack, testConfig, type TestStack } from '../helpers/testStack';
import { customerId, expectedBraze, makeProfiles, writeRefresh, type ModelProfile } from '../helpers/profileModel';

async function syncOnce(stack: TestStack, options: { force?: boolean } = {}): Promise<RunRecord> {
  const outcome = await requestSync(stack.app.deps, { trigger: 'http', force: options.force });
  expect(outcome.problems).toEqual([]);
  expect(outcome.runs).toHaveLength(1);
  const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 90_000 });
  expect(run.status).toBe('completed');
  expect(rowsAccountedFor(run)).toBe(run.rowsRead);
  return run;
}

function expectBrazeToEqual(stack: TestStack, expected: Map<string, Record<string, unknown>>) {
  const mismatches: string[] = [];
  for (const [key, profile] of expected) {
    const actual = stack.braze.profile(key);
    if (JSON.stringify(sorted(actual)) !== JSON.stringify(sorted(profile)))
      mismatches.push(`${key}: expected ${JSON.stringify(profile)}, got ${JSON.stringify(actual)}`);
  }
  expect(mismatches.slice(0, 5)).toEqual([]);
  expect(stack.braze.profiles.size).toBe(expected.size);
}

function sorted(object: Record<string, unknown> | undefined) {
  return object && Object.fromEntries(Object.entries(object).sort(([a], [b]) => a.localeCompare(b)));
}

// Every way a refresh is read: every step through the queue, read on by each instance that works a
// step (READ_ON_SECONDS), and a small refresh read step after step by the instance that has it
// (SMALL_REFRESH_MAX_BYTES).
describe.each([
  ['every step through the queue', { SMALL_REFRESH_MAX_BYTES: '0', READ_ON_SECONDS: '0' }],
  ['read on by each instance that works a step', { SMALL_REFRESH_MAX_BYTES: '0', READ_ON_SECONDS: '60' }],
  ['read by the instance that has it', { SMALL_REFRESH_MAX_BYTES: String(8 * 1024 * 1024), READ_ON_SECONDS: '60' }],
])('incremental sync: only what changed, and leavers cleared (%s)', (_path, reading) => {
  let stack: TestStack;
  const startTestStack = (options: Parameters<typeof startStack>[0] = {}) => startStack({ ...options, env: { ...reading, ...options.env } });
  afterEach(async () => {
    await stack?.stop();
  });

  it('sends joiners, leavers and changed profiles only, and nothing for an identical refresh', async () => {
    // Small shards, so the refresh is read by several diff steps and the shard count changes between runs.
    stack = await startTestStack({ env: { PROFILES_PER_SHARD: '240' } });
    const container = stack.app.deps.storage.exportContainer;
    const first = makeProfiles(1, 2000);
    await writeRefresh(container, first.values(), '2026/11/27/0600');
    const run1 = await syncOnce(stack);
    expect(run1.shards).toBeGreaterThan(1);
    expect(run1.usersEnqueued).toBe(2000);
    expect(run1.rowsSkippedUnchanged).toBe(0);
    expectBrazeToEqual(stack, expectedBraze([first]));

    // ~10% leave a segment or both, ~10% join, ~5% change a value.
    const second = new Map<string, ModelProfile>();
    for (const [id, p] of first) second.set(id, { ...p, segments: new Set(p.segments) });
    let leavers = 0;
    let changed = 0;
    for (let n = 1; n <= 2000; n++) {
      const p = second.get(customerId(n))!;
      if (n % 20 === 1) {
        second.delete(customerId(n)); // leaves every segment
        leavers += 1;
      } else if (n % 20 === 2 && p.segments.size === 2) {
        p.segments.delete('Newsletter'); // leaves one segment, stays in the other
        leavers += 1;
      } else if (n % 20 === 5) {
        p.points += 1000;
        changed += 1;
      }
    }
    const joiners = makeProfiles(2001, 2200);
    for (const [id, p] of joiners) second.set(id, p);
    await writeRefresh(container, second.values(), '2026/11/28/0600');
    const appliedBefore = stack.braze.stats.objectsApplied;
    const run2 = await syncOnce(stack);
    expect(run2.shards).not.toBe(run1.shards);

    expect(run2.usersEnqueued).toBe(joiners.size + leavers + changed);
    expect(run2.exitsEnqueued).toBe(100);
    expect(stack.braze.stats.objectsApplied - appliedBefore).toBe(run2.usersEnqueued);
    const secondRows = [...second.values()].reduce((n, p) => n + p.segments.size, 0);
    expect(run2.rowsRead).toBe(secondRows);
    expect(run2.rowsSkippedUnchanged).toBeGreaterThan(secondRows * 0.7);
    expect(run2.dataPointsSent).toBeLessThan(run2.dataPointsFullSend / 3);
    expectBrazeToEqual(stack, expectedBraze([first, second]));
    // A profile that left both segments keeps its fields but no membership.
    expect(stack.braze.profile(`external_id:${customerId(21)}`)).toEqual({ email: 'user21@example.com', first_name: 'First21', loyalty_points: 21 });

    // A third refresh identical to the second sends nothing and says so.
    await writeRefresh(container, second.values(), '2026/11/29/0600');
    const requestsBefore = stack.braze.stats.requests;
    const run3 = await syncOnce(stack);
    expect(run3.usersEnqueued).toBe(0);
    expect(run3.rowsSkippedUnchanged).toBe(run3.rowsRead);
    expect(stack.braze.stats.requests).toBe(requestsBefore);
    expect(stack.log.lines.some((l) => l.includes(`run ${run3.runId}: read ${run3.rowsRead} rows; 0 profiles to send`))).toBe(true);

    // force re-sends everything and rebuilds the state.
    const run4 = await syncOnce(stack, { force: true });
    expect(run4.usersEnqueued).toBe(second.size);
    expect(run4.rowsSkippedUnchanged).toBe(0);
    expectBrazeToEqual(stack, expectedBraze([first, second]));
  });

  it('clears leavers with false when the destination asks for it', async () => {
    stack = await startTestStack({ env: { SYNC_CONFIG: JSON.stringify(testConfig({ leaverValue: false })) } });
    const container = stack.app.deps.storage.exportContainer;
    const first = makeProfiles(1, 30);
    await writeRefresh(container, first.values(), '2026/11/27/0600', 1);
    await syncOnce(stack);
    const second = new Map(first);
    second.delete(customerId(1));
    await writeRefresh(container, second.values(), '2026/11/28/0600', 1);
    const run = await syncOnce(stack);
    expect(run.exitsEnqueued).toBe(1);
    expect(stack.braze.profile(`external_id:${customerId(1)}`)).toMatchObject({ ci_high_value: false });
  });

  it('re-sends at the next refresh what Braze refused, instead of forgetting it', async () => {
    stack = await startTestStack();
    const container = stack.app.deps.storage.exportContainer;
    const first = makeProfiles(1, 50);
    // Braze refuses external ids starting with "reject-": those rows must not enter the delivered state.
    const refused = { ...first.get(customerId(7))!, id: 'reject-7' };
    first.set('reject-7', refused);
    await writeRefresh(container, first.values(), '2026/11/27/0600', 1);
    const run1 = await syncOnce(stack);
    expect(run1.usersRejected).toBe(1);
    await writeRefresh(container, first.values(), '2026/11/28/0600', 1);
    const run2 = await syncOnce(stack);
    expect(run2.usersEnqueued).toBe(1);
    expect(run2.usersRejected).toBe(1);
  });
});
