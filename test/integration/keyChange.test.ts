import { rejectsReportName } from '../../shared/runs/runBlobs';
import { HttpRequest, InvocationContext } from '@azure/functions';
import { runPreview } from '../../functions/runPreview';
import { requestSync } from '../../shared/sync/startSync';
import { brazeMismatches, expectExactCounts } from '../helpers/expectations';
import { customerId, expectedBraze, makeProfiles, writeRefresh, type ModelProfile } from '../helpers/profileModel';
import { startTestStack, type TestStack } from '../helpers/testStack';

/**
 * A CI row that gains a customer ID changes its profile key from its e-mail to the external_id.
 * In Braze, an object identified by e-mail updates the most recently updated profile with an
 * external_id that holds the address (post_user_track.md), so clearing the e-mail-keyed profile
 * by e-mail would land on the identified one; the e-mail-only profile is merged into it with
 * /users/identify instead (post_user_identify.md, emails_to_identify).
 */
describe('a row that gains a customer ID', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  async function sync(refresh: Map<string, ModelProfile>, runFolder: string, dryRun = false, extraRows: ModelProfile[] = []) {
    await writeRefresh(stack!.app.deps.storage.exportContainer, [...refresh.values(), ...extraRows], runFolder, 1);
    const outcome = await requestSync(stack!.app.deps, { trigger: 'http', dryRun });
    expect(outcome.problems).toEqual([]);
    const [run] = await stack!.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    if (!dryRun) expectExactCounts(run);
    return run;
  }

  it('merges its e-mail-only profile into the identified one, which keeps only the memberships of this refresh', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 40);
    // Profile 7 first comes without a customer ID (keyed by e-mail), in both segments.
    const seven = profiles.get(customerId(7))!;
    const before = new Map(profiles);
    before.set(seven.id, { ...seven, id: '', segments: new Set(['HighValue', 'Newsletter']) });
    await sync(before, '2026/11/28/0600');
    expect(stack.braze.profile(`email:${seven.email}`)).toMatchObject({ ci_high_value: true, ci_newsletter: true });

    // Then CI gives it a customer ID, and it is in HighValue only.
    const after = new Map(profiles);
    after.set(seven.id, { ...seven, segments: new Set(['HighValue']) });
    // A dry run first: the merge is previewed, nothing is sent.
    const dry = await sync(after, '2026/11/28/0700', true);
    const answer = await runPreview(
      new HttpRequest({ url: `http://localhost/api/runs/${dry.runId}/preview`, method: 'GET', params: { id: dry.runId } }),
      new InvocationContext({ functionName: 'runPreview' }),
    );
    const preview = answer.jsonBody as { profiles: { merging?: number }; sample: { identifier: string; change: string; attributes: string[] }[] };
    expect(preview.profiles.merging).toBe(1);
    expect(preview.sample).toContainEqual({ identifier: `external_id ${seven.id}`, change: 'merges', attributes: ['ci_newsletter'] });
    expect(stack.braze.stats.identifyRequests).toBe(0);
    const run = await sync(after, '2026/11/28/0700');

    expect(brazeMismatches(stack.braze, expectedBraze([after]))).toEqual([]);
    expect(stack.braze.profile(`email:${seven.email}`)).toBeUndefined();
    expect(stack.braze.stats.identifyRequests).toBe(1);
    expect(run.usersFailed).toBe(0);

    // The state counts its e-mail-keyed profiles: none now, so the next refreshes leave no identity hints.
    const pointer = await stack.app.deps.destinations.statePointer(run.modelJsonPath);
    const manifest = JSON.parse((await stack.app.deps.storage.stateContainer.getBlobClient(pointer!.blobName).downloadToBuffer()).toString('utf8'));
    expect(manifest.emailKeys).toBe(0);

    // The next refresh changes nothing: the merge is remembered.
    const quiet = await sync(after, '2026/11/28/0800');
    expect(quiet.usersDelivered).toBe(0);
    expect(stack.braze.stats.identifyRequests).toBe(1);
  }, 120_000);

  it('rejects a row without a customer ID whose e-mail a row with one carries, and merges the profile it had', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 20);
    const seven = profiles.get(customerId(7))!;
    const refresh = new Map(profiles);
    refresh.set(seven.id, { ...seven, id: '', segments: new Set(['HighValue', 'Newsletter']) });
    await sync(refresh, '2026/11/28/0600');

    // Another CI profile, with a customer ID, now carries the same e-mail; the row without one stays.
    const other = { ...makeProfiles(21, 21).get(customerId(21))!, email: seven.email, segments: new Set(['HighValue'] as const) };
    refresh.set(other.id, other);
    // Its row comes twice in HighValue: the second is a duplicate, rejected once.
    const run = await sync(refresh, '2026/11/28/0700', false, [{ ...seven, id: '', segments: new Set(['HighValue']) }]);

    // Sent by e-mail, the row would have overwritten the other profile's fields in Braze: rejected, both rows.
    expect(run.rowsRejectedInput).toBe(3);
    expect(run.rowsRead).toBe(run.rowsDelivered + run.rowsSkippedUnchanged + run.rowsRejectedInput + run.rowsRejectedBraze + run.rowsFailed);
    const report = (await stack.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(run.runId)).downloadToBuffer()).toString('utf8');
    expect(report.match(/rejected,[^,]+,\d+,email \(redacted\),"?no customer ID, and a row with a customer ID carries this e-mail/g)).toHaveLength(2);
    expect(report.match(/duplicate: the segment has another row of this profile/g)).toHaveLength(1);
    // What Braze had of it was merged into the other profile, which keeps only its own membership and fields.
    expect(stack.braze.stats.identifyRequests).toBe(1);
    expect(stack.braze.profile(`email:${seven.email}`)).toBeUndefined();
    expect(stack.braze.profile(`external_id:${other.id}`)).toEqual({
      email: seven.email,
      first_name: other.firstName,
      loyalty_points: other.points,
      ci_high_value: true,
    });
  }, 120_000);

  it('leaves the e-mail-only profile as it is, with a reason, when rows of two customer IDs carry its e-mail', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 20);
    const seven = profiles.get(customerId(7))!;
    const before = new Map(profiles);
    before.set(seven.id, { ...seven, id: '', segments: new Set(['HighValue']) });
    await sync(before, '2026/11/28/0600');

    const after = new Map(profiles);
    const eight = profiles.get(customerId(8))!;
    after.set(eight.id, { ...eight, email: seven.email });
    const run = await sync(after, '2026/11/28/0700');

    expect(stack.braze.stats.identifyRequests).toBe(0);
    // Neither member lost its membership to a clear by e-mail; the e-mail-only profile keeps its own.
    expect(stack.braze.profile(`external_id:${seven.id}`)).toMatchObject({ ci_high_value: true });
    expect(stack.braze.profile(`external_id:${eight.id}`)).toMatchObject({ ci_newsletter: true });
    expect(stack.braze.profile(`email:${seven.email}`)).toMatchObject({ ci_high_value: true });
    const report = (await stack.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(run.runId)).downloadToBuffer()).toString('utf8');
    expect(report).toMatch(/rejected,leaver,,email \(redacted\),"?not cleared \(ci_high_value\): rows of several customer IDs carry this e-mail/);
    expect(report).not.toContain(seven.email);
  }, 120_000);
});
