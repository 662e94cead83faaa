import { HttpRequest, InvocationContext } from '@azure/functions';
import { reconcileHttp } from '../../functions/reconcileHttp';
import { runPreview } from '../../functions/runPreview';
import type { RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { systemClock } from '../../shared/clock';
import { awaitSegmentExport } from '../../shared/reconcile/segmentExport';
import { brazeMismatches, expectExactCounts, waitFor } from '../helpers/expectations';
import { customerId, expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { startTestStack, TEST_API_KEY, type TestStack } from '../helpers/testStack';

const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });

/** The Braze segments CI's export asks for, each defined in Braze by its membership attribute. */
const SEGMENTS = { 'seg-high-value': 'ci_high_value', ci_newsletter: 'ci_newsletter' };

interface Drift {
  segments: Record<string, { missing: number; stray: number; unresolved: number }>;
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
    expect(drift.segments).toEqual({ ci_high_value: { missing: 1, stray: 1, unresolved: 0 }, ci_newsletter: { missing: 0, stray: 1, unresolved: 0 } });
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
    expect(drift.segments.ci_high_value).toEqual({ missing: 1, stray: 1, unresolved: 0 });
    expect(drift.requests).toBe(1);
    // The drift report is the dry run's preview.
    const served = await runPreview(
      new HttpRequest({ url: `http://localhost/api/runs/${preview.runId}/preview`, method: 'GET', params: { id: preview.runId } }),
      context(),
    );
    expect(served.status).toBe(200);
    expect(served.jsonBody).toMatchObject({ runId: preview.runId, dryRun: true, profiles: 5, segments: drift.segments });
    expect(stack.braze.stats.trackRequests).toBe(track);
    expect(JSON.stringify([...stack.braze.profiles.entries()])).toBe(drifted);
    expect(await stack.app.deps.destinations.statePointer(preview.modelJsonPath)).toEqual(pointer);

    // The real reconcile then repairs exactly what the preview found.
    const run = await reconcile(stack, { destination: 'BrazeExport' });
    expect(run.usersDelivered).toBe(drift.profiles);
    expect(run.brazeRequests).toBe(drift.requests);
    expect(brazeMismatches(stack.braze, expectedAfterRepair(profiles))).toEqual([]);
  }, 120_000);

  it('clears a value Braze holds where CI has an empty cell, found by a dry run first, and restores one Braze lost', async () => {
    stack = await startTestStack({ braze: { segments: SEGMENTS, exportDelayMs: 50 }, env: { RECONCILE_POLL_SECONDS: '1' } });
    const profiles = makeProfiles(1, 60);
    // Profiles 7 to 9 have no first name in CI: the sync sends first_name as null, so Braze holds none.
    for (const n of [7, 8, 9]) profiles.get(customerId(n))!.firstName = '';
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    await sync(stack);
    const expected = expectedBraze([profiles]);
    for (const n of [7, 8, 9]) delete expected.get(`external_id:${customerId(n)}`)!.first_name;
    expect(brazeMismatches(stack.braze, expected)).toEqual([]);
    // Someone named profile 7 in Braze, and removed profile 10's name.
    stack.braze.profile(`external_id:${customerId(7)}`)!.first_name = 'Ana';
    delete stack.braze.profile(`external_id:${customerId(10)}`)!.first_name;
    const drifted = JSON.stringify([...stack.braze.profiles.entries()]);
    const track = stack.braze.stats.trackRequests;

    const preview = await reconcile(stack, { destination: 'BrazeExport', dryRun: true });
    expect(preview.status).toBe('completed');
    const found = JSON.parse(preview.drift!) as Drift;
    expect(found.staleValues).toEqual({ first_name: 2 });
    expect(found.profiles).toBe(2);
    expect(found.sample.map((s) => [s.drift, s.attributes])).toEqual([
      ['stale', ['first_name']],
      ['stale', ['first_name']],
    ]);
    expect(stack.braze.stats.trackRequests).toBe(track);
    expect(JSON.stringify([...stack.braze.profiles.entries()])).toBe(drifted);

    const run = await reconcile(stack, { destination: 'BrazeExport' });
    expect(run.status).toBe('completed');
    expect((JSON.parse(run.drift!) as Drift).staleValues).toEqual({ first_name: 2 });
    expect(run.usersDelivered).toBe(2);
    expect(stack.braze.profile(`external_id:${customerId(7)}`)).not.toHaveProperty('first_name');
    expect(stack.braze.profile(`external_id:${customerId(10)}`)!.first_name).toBe('First10');
    expect(brazeMismatches(stack.braze, expected)).toEqual([]);

    // Nothing in Braze where CI has nothing is no drift.
    const clean = await reconcile(stack, { destination: 'BrazeExport' });
    expect((JSON.parse(clean.drift!) as Drift).profiles).toBe(0);
    expect(clean.usersEnqueued).toBe(0);
  }, 90_000);

  it('never clears a Braze member that CI may list under another of its keys', async () => {
    stack = await startTestStack({ braze: { segments: SEGMENTS, exportDelayMs: 50 }, env: { RECONCILE_POLL_SECONDS: '1' } });
    const profiles = makeProfiles(1, 50);
    // A CI row without a customer ID: the connector keys it by e-mail.
    const noCustomerId = { id: '', email: 'no-cid@example.com', firstName: 'Nora', points: 7, segments: new Set(['HighValue'] as const) };
    await writeRefresh(stack.app.deps.storage.exportContainer, [...profiles.values(), noCustomerId], '2026/11/28/0600', 1);
    await sync(stack);
    // The app has since given that profile an external_id in Braze: Braze lists it under both.
    const byEmail = stack.braze.profile('email:no-cid@example.com')!;
    stack.braze.profiles.delete('email:no-cid@example.com');
    stack.braze.profiles.set('external_id:app-77', { ...byEmail, email: 'no-cid@example.com' });
    const track = stack.braze.stats.trackRequests;

    const run = await reconcile(stack, { destination: 'BrazeExport' });
    expect(run.status).toBe('completed');
    const drift = JSON.parse(run.drift!) as Drift;
    // Its first key (the external_id) is no CI member, but its e-mail is: reported, not cleared.
    expect(drift.segments.ci_high_value).toEqual({ missing: 0, stray: 0, unresolved: 1 });
    expect(drift.profiles).toBe(0);
    expect(stack.braze.stats.trackRequests).toBe(track);
    expect(stack.braze.profile('external_id:app-77')!.ci_high_value).toBe(true);
  }, 60_000);

  it('waits for an export of the same segment already in progress, then asks again', async () => {
    stack = await startTestStack({ braze: { segments: SEGMENTS, exportDelayMs: 1_500 }, env: { RECONCILE_POLL_SECONDS: '1' } });
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 50).values(), '2026/11/28/0600', 1);
    await sync(stack);
    // Someone else's export of the newsletter segment is running: Braze allows one at a time.
    const other = await fetch(`${stack.braze.url}/users/export/segment`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TEST_API_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ segment_id: 'ci_newsletter', fields_to_export: ['external_id'] }),
    });
    expect(other.status).toBe(201);
    const run = await reconcile(stack, { destination: 'BrazeExport' });
    expect(run.status).toBe('completed');
    expect(stack.braze.stats.byStatus[429]).toBeGreaterThan(0);
    expect(stack.log.lines.some((line) => /export of segment "ci_newsletter" .*is refused for now \(429/.test(line))).toBe(true);
    expect((JSON.parse(run.drift!) as Drift).profiles).toBe(0);
  }, 60_000);

  it('gives up on an export that is not ready within RECONCILE_EXPORT_TIMEOUT_MINUTES, with the reason', async () => {
    // Braze's exports take an hour here: the reconcile keeps waiting without holding anything.
    stack = await startTestStack({ braze: { segments: SEGMENTS, exportDelayMs: 3_600_000 }, env: { RECONCILE_POLL_SECONDS: '1' } });
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 20).values(), '2026/11/28/0600', 1);
    await sync(stack);
    const answer = await reconcileHttp(
      new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify({ destination: 'BrazeExport' }) } }),
      context(),
    );
    const runId = (answer.jsonBody as { runId: string }).runId;
    await waitFor(() => stack!.braze.stats.exportRequests === 2);
    const run = (await stack.app.deps.runs.get(runId))!;
    await expect(awaitSegmentExport(stack.app.deps, run, 0)).resolves.toMatchObject({ kind: 'wait', delayMs: 1_000 });
    // Three hours and a minute later, by the connector's clock.
    const later = { ...stack.app.deps, clock: { ...systemClock, now: () => Date.now() + 181 * 60_000 } };
    await expect(awaitSegmentExport(later, run, 0)).rejects.toThrow(
      /Braze's export of segment "seg-high-value" \(HighValue\) was not ready 181 minutes after it was asked for \(RECONCILE_EXPORT_TIMEOUT_MINUTES\)/,
    );
    // Asked once per segment, however often the step looked.
    expect(stack.braze.stats.exportRequests).toBe(2);
  }, 60_000);

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
