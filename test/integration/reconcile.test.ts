import { HttpRequest, InvocationContext } from '@azure/functions';
import { reconcileHttp } from '../../functions/reconcileHttp';
import type { RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { brazeMismatches, expectExactCounts } from '../helpers/expectations';
import { customerId, expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { startTestStack, type TestStack } from '../helpers/testStack';

const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });

/** The Braze segments CI's export asks for, each defined in Braze by its membership attribute. */
const SEGMENTS = { 'seg-high-value': 'ci_high_value', ci_newsletter: 'ci_newsletter' };

interface Drift {
  segments: Record<string, { missing: number; stray: number }>;
  staleValues: Record<string, number>;
  profiles: number;
  requests: number;
  usersExported: Record<string, number>;
  usersUnmatched: number;
  sample: { identifier: string; drift: string; attributes: string[] }[];
}

async function reconcile(stack: TestStack, body: Record<string, unknown>): Promise<RunRecord> {
  const answer = await reconcileHttp(
    new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify(body) } }),
    context(),
  );
  expect(answer.status).toBe(202);
  const runId = (answer.jsonBody as { runId: string }).runId;
  expect(runId).toMatch(/^c-/);
  const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
  return run;
}

async function sync(stack: TestStack): Promise<RunRecord> {
  const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
  expect(outcome.problems).toEqual([]);
  const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
  expect(run.status).toBe('completed');
  return run;
}

/** Drift of every kind, made in Braze behind the connector's back. */
function injectDrift(stack: TestStack) {
  const profile = (n: number) => stack.braze.profile(`external_id:${customerId(n)}`)!;
  delete profile(1).ci_high_value; // someone removed the attribute
  profile(6).ci_high_value = true; // a CI member (of Newsletter only) joined another segment in Braze
  profile(4).first_name = 'Renamed'; // edited in Braze
  profile(5).loyalty_points = 999; // overwritten by a bulk import
  stack.braze.profiles.set('external_id:stray-1', { ci_newsletter: true, first_name: 'Stray' }); // a member CI never listed
}

function expectedAfterRepair(profiles: ReturnType<typeof makeProfiles>) {
  const expected = expectedBraze([profiles]);
  // The stray member is cleared (leaver value: the attribute removed); what else it holds is not ours.
  expected.set('external_id:stray-1', { first_name: 'Stray' });
  return expected;
}

describe('reconcile with Braze', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('repairs drift of each kind through the batch queue, then leaves the clean workspace untouched', async () => {
    stack = await startTestStack({ braze: { segments: SEGMENTS, exportDelayMs: 300 }, env: { RECONCILE_POLL_SECONDS: '1' } });
    const profiles = makeProfiles(1, 400);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    await sync(stack);
    injectDrift(stack);

    const run = await reconcile(stack, { destination: 'BrazeExport' });
    expect(run.status).toBe('completed');
    expect(run.reconcile).toBe(true);
    const drift = JSON.parse(run.drift!) as Drift;
    expect(drift.segments).toEqual({ ci_high_value: { missing: 1, stray: 1 }, ci_newsletter: { missing: 0, stray: 1 } });
    expect(drift.staleValues).toEqual({ first_name: 1, loyalty_points: 1 });
    expect(drift.profiles).toBe(5);
    expect(drift.usersUnmatched).toBe(0);
    const highValue = [...profiles.values()].filter((p) => p.segments.has('HighValue')).length;
    const newsletter = [...profiles.values()].filter((p) => p.segments.has('Newsletter')).length;
    // What Braze's segments held when they were exported: the drift included.
    expect(drift.usersExported).toEqual({ ci_high_value: highValue - 1 + 1, ci_newsletter: newsletter + 1 });
    expect(drift.sample.map((s) => s.identifier)).not.toContainEqual(expect.stringContaining('@'));
    // Only the drifted profiles were sent; every row has its ending.
    expect(run.usersDelivered).toBe(5);
    expect(run.exitsEnqueued).toBe(1);
    expectExactCounts(run);
    expect(brazeMismatches(stack.braze, expectedAfterRepair(profiles))).toEqual([]);

    // Braze now matches: a second reconcile exports again and sends nothing.
    const track = stack.braze.stats.trackRequests;
    const exports = stack.braze.stats.exportRequests;
    const clean = await reconcile(stack, { destination: 'BrazeExport' });
    expect(clean.status).toBe('completed');
    expect((JSON.parse(clean.drift!) as Drift).profiles).toBe(0);
    expect(clean.usersEnqueued).toBe(0);
    expect(stack.braze.stats.trackRequests).toBe(track);
    expect(stack.braze.stats.exportRequests).toBe(exports + 2);
    // The state the reconcile wrote is the refresh's: the next refresh, the same, has nothing to send.
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/29/0600', 2);
    const next = await sync(stack);
    expect(next.refreshLabel).toContain('2026/11/29');
    expect(next.usersEnqueued).toBe(0);
    expect(stack.braze.stats.trackRequests).toBe(track);
  }, 120_000);

  it('as a dry run reports the drift and changes nothing in Braze or the state', async () => {
    stack = await startTestStack({ braze: { segments: SEGMENTS, exportDelayMs: 100 }, env: { RECONCILE_POLL_SECONDS: '1' } });
    const profiles = makeProfiles(1, 200);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    const synced = await sync(stack);
    injectDrift(stack);
    const drifted = JSON.stringify([...stack.braze.profiles.entries()]);
    const pointer = await stack.app.deps.destinations.statePointer(synced.modelJsonPath);
    const track = stack.braze.stats.trackRequests;

    const preview = await reconcile(stack, { destination: 'BrazeExport', dryRun: true });
    expect(preview.status).toBe('completed');
    expect(preview.dryRun).toBe(true);
    const drift = JSON.parse(preview.drift!) as Drift;
    expect(drift.profiles).toBe(5);
    expect(drift.segments.ci_high_value).toEqual({ missing: 1, stray: 1 });
    expect(drift.requests).toBe(1);
    expect(stack.braze.stats.trackRequests).toBe(track);
    expect(JSON.stringify([...stack.braze.profiles.entries()])).toBe(drifted);
    expect(await stack.app.deps.destinations.statePointer(preview.modelJsonPath)).toEqual(pointer);

    // The real reconcile then repairs exactly what the preview found.
    const run = await reconcile(stack, { destination: 'BrazeExport' });
    expect(run.usersDelivered).toBe(drift.profiles);
    expect(run.brazeRequests).toBe(drift.requests);
    expect(brazeMismatches(stack.braze, expectedAfterRepair(profiles))).toEqual([]);
  }, 120_000);

  it('fails with the reason when Braze will not export a segment, and sends nothing', async () => {
    // Braze knows only one of the two segments.
    stack = await startTestStack({ braze: { segments: { ci_newsletter: 'ci_newsletter' }, exportDelayMs: 50 }, env: { RECONCILE_POLL_SECONDS: '1' } });
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 50).values(), '2026/11/28/0600', 1);
    await sync(stack);
    const track = stack.braze.stats.trackRequests;
    const run = await reconcile(stack, { destination: 'BrazeExport' });
    expect(run.status).toBe('failed');
    expect(run.error).toMatch(/Braze refused Braze's export of segment "seg-high-value" \(400: Invalid segment_id\)/);
    expect(stack.braze.stats.trackRequests).toBe(track);
  }, 60_000);

  it('refuses a request without a destination', async () => {
    const answer = await reconcileHttp(new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: '{}' } }), context());
    expect(answer.status).toBe(400);
    expect(JSON.stringify(answer.jsonBody)).toContain('destination');
  });
});
