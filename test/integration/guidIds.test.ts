import { HttpRequest, InvocationContext } from '@azure/functions';
import { reconcileHttp } from '../../functions/reconcileHttp';
import { requestSync } from '../../shared/sync/startSync';
import { csv, writeExport } from '../helpers/exportBuilder';
import { expectExactCounts } from '../helpers/expectations';
import { startTestStack, testConfig, type TestStack } from '../helpers/testStack';
import type { RunRecord } from '../../shared/runs/runRecord';

/**
 * CDM's GUID dataType (the export's model.json) names one value whatever its spelling; Braze's
 * external_id is a string, so `{0B5E…}` and `0b5e…` would be two users. With the customer-ID
 * column a GUID, the connector sends one spelling, and a state written with others is renamed in
 * Braze (POST /users/external_ids/rename keeps the old ID as a deprecated one that still finds the
 * user: braze-docs post_external_ids_rename.md), never re-sent as new.
 */
const guid = (n: number) => `0b5e3dd6-1c2d-4e5f-8a9b-${String(n).padStart(12, '0')}`;
const shouted = (n: number) => `{${guid(n).toUpperCase()}}`;

describe('GUID customer IDs', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  async function sync(rows: { HighValue: string[][]; Newsletter: string[][] }, runFolder: string): Promise<RunRecord> {
    await writeExport(stack!.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      segments: [
        { table: 'HighValue', runFolder, partitions: [csv(rows.HighValue)] },
        { table: 'Newsletter', runFolder, partitions: [csv(rows.Newsletter)] },
      ],
    });
    const outcome = await requestSync(stack!.app.deps, { trigger: 'http' });
    expect(outcome.problems).toEqual([]);
    const [run] = await stack!.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expectExactCounts(run);
    return run;
  }
  const row = (id: string, n: number, points = n) => [id, `user${n}@example.com`, `First${n}`, String(points)];

  it('is one Braze user whatever its spelling, when the column is a GUID; two when told to keep spellings', async () => {
    const rows = {
      HighValue: [row(shouted(1), 1), row(`(${guid(2).replace(/-/g, '').toUpperCase()})`, 2)],
      Newsletter: [row(guid(1), 1), row(guid(2), 2), row('not-a-guid-3', 3)],
    };
    stack = await startTestStack();
    await sync(rows, '2026/11/28/0600');
    expect([...stack.braze.profiles.keys()].sort()).toEqual([`external_id:${guid(1)}`, `external_id:${guid(2)}`, 'external_id:not-a-guid-3']);
    expect(stack.braze.profile(`external_id:${guid(1)}`)).toMatchObject({ ci_high_value: true, ci_newsletter: true });
    await stack.stop();

    const config = testConfig();
    config.destinations[0].matching.normalizeGuids = false;
    stack = await startTestStack({ config });
    await sync(rows, '2026/11/28/0600');
    expect(stack.braze.profiles.size).toBe(5);
    expect(stack.braze.profile(`external_id:${shouted(1)}`)).toEqual({
      email: 'user1@example.com',
      first_name: 'First1',
      loyalty_points: 1,
      ci_high_value: true,
    });
  }, 120_000);

  it('renames in Braze what a state holds under other spellings, sends nothing else that did not change, and remembers it', async () => {
    const config = testConfig();
    config.destinations[0].matching.normalizeGuids = false;
    stack = await startTestStack({ config });
    const shout = (points = (n: number) => n) => ({
      HighValue: Array.from({ length: 30 }, (_, i) => row(shouted(i + 1), i + 1, points(i + 1))),
      Newsletter: [row(shouted(2), 2, points(2))],
    });
    await sync(shout(), '2026/11/28/0600');
    expect(stack.braze.profile(`external_id:${shouted(5)}`)).toMatchObject({ ci_high_value: true, loyalty_points: 5 });

    // The destination now keys GUIDs in one spelling (its default for a GUID column); profile 5's points change.
    delete stack.app.deps.config.destinations[0].matching.normalizeGuids;
    const tracked = stack.braze.stats.trackRequests;
    const run = await sync(
      shout((n) => (n === 5 ? 500 : n)),
      '2026/11/28/0700',
    );
    expect(run.usersDelivered).toBe(30);
    expect(run.usersFailed + run.usersRejected).toBe(0);
    expect(stack.braze.stats.renameRequests).toBeGreaterThanOrEqual(1);
    // Only profile 5's change was written: the renames cost no /users/track request beyond it.
    expect(stack.braze.stats.trackRequests - tracked).toBe(1);
    expect(stack.braze.profiles.size).toBe(30);
    for (let n = 1; n <= 30; n++)
      expect(stack.braze.profile(`external_id:${guid(n)}`)).toMatchObject({ ci_high_value: true, loyalty_points: n === 5 ? 500 : n });
    expect(stack.braze.profile(`external_id:${guid(2)}`)).toMatchObject({ ci_newsletter: true });
    // The old spelling still finds the user (a deprecated ID), as an app that uses it expects.
    expect(stack.braze.deprecatedIds.get(shouted(7))).toBe(guid(7));

    const renames = stack.braze.stats.renameRequests;
    const quiet = await sync(
      shout((n) => (n === 5 ? 500 : n)),
      '2026/11/28/0800',
    );
    expect(quiet.usersEnqueued).toBe(0);
    expect(stack.braze.stats.renameRequests).toBe(renames);
  }, 120_000);

  it('writes under the canonical spelling when Braze refuses the rename (a user of that spelling exists), and says so', async () => {
    const config = testConfig();
    config.destinations[0].matching.normalizeGuids = false;
    stack = await startTestStack({ config });
    await sync({ HighValue: [row(shouted(1), 1), row(shouted(2), 2)], Newsletter: [] }, '2026/11/28/0600');
    // An app created the canonical spelling's user meanwhile.
    stack.braze.profiles.set(`external_id:${guid(1)}`, { app_user: true });

    delete stack.app.deps.config.destinations[0].matching.normalizeGuids;
    const run = await sync({ HighValue: [row(shouted(1), 1, 100), row(shouted(2), 2)], Newsletter: [] }, '2026/11/28/0700');
    expect(run.usersFailed + run.usersRejected).toBe(0);
    expect(stack.braze.profile(`external_id:${guid(1)}`)).toMatchObject({ app_user: true, loyalty_points: 100 });
    expect(stack.braze.profile(`external_id:${guid(2)}`)).toMatchObject({ ci_high_value: true, loyalty_points: 2 });
    expect(stack.log.lines.some((line) => line.includes('Braze did not rename 1 of'))).toBe(true);
    // Converged: nothing is asked again.
    const renames = stack.braze.stats.renameRequests;
    const quiet = await sync({ HighValue: [row(shouted(1), 1, 100), row(shouted(2), 2)], Newsletter: [] }, '2026/11/28/0800');
    expect(quiet.usersEnqueued).toBe(0);
    expect(stack.braze.stats.renameRequests).toBe(renames);
  }, 120_000);

  it('a reconcile finds a user Braze has under another spelling by its canonical one, and renames it', async () => {
    const config = testConfig();
    config.destinations[0].matching.normalizeGuids = false;
    stack = await startTestStack({ config, braze: { segments: { 'seg-high-value': 'ci_high_value', ci_newsletter: 'ci_newsletter' } } });
    const rows = { HighValue: Array.from({ length: 6 }, (_, i) => row(shouted(i + 1), i + 1)), Newsletter: [row(shouted(2), 2)] };
    await sync(rows, '2026/11/28/0600');

    delete stack.app.deps.config.destinations[0].matching.normalizeGuids;
    const answer = await reconcileHttp(
      new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify({ destination: 'BrazeExport' }) } }),
      new InvocationContext({ functionName: 'reconcile', invocationId: 'test', logHandler: () => undefined }),
    );
    expect(answer.status).toBe(202);
    const [run] = await stack.app.waitForRuns([(answer.jsonBody as { runId: string }).runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run.usersFailed + run.usersRejected).toBe(0);
    // One user per profile, each under its canonical ID, with nothing else written: no duplicate was created.
    expect([...stack.braze.profiles.keys()].sort()).toEqual(Array.from({ length: 6 }, (_, i) => `external_id:${guid(i + 1)}`).sort());
    expect(stack.braze.profile(`external_id:${guid(2)}`)).toMatchObject({ ci_high_value: true, ci_newsletter: true, loyalty_points: 2 });
    // The state it wrote is keyed canonically: the next sync has nothing to do.
    const quiet = await sync(rows, '2026/11/28/0700');
    expect(quiet.usersEnqueued).toBe(0);
  }, 120_000);

  it('clears the memberships of another spelling that was a user of its own, and keeps the canonical one', async () => {
    const config = testConfig();
    config.destinations[0].matching.normalizeGuids = false;
    stack = await startTestStack({ config });
    const rows = { HighValue: [row(shouted(1), 1), row(guid(3), 3)], Newsletter: [row(guid(1), 1)] };
    await sync(rows, '2026/11/28/0600');
    expect(stack.braze.profiles.size).toBe(3);

    delete stack.app.deps.config.destinations[0].matching.normalizeGuids;
    const run = await sync(rows, '2026/11/28/0700');
    expect(run.usersFailed + run.usersRejected).toBe(0);
    expect(stack.braze.profile(`external_id:${guid(1)}`)).toMatchObject({ ci_high_value: true, ci_newsletter: true });
    const other = stack.braze.profile(`external_id:${shouted(1)}`)!;
    expect(other.ci_high_value).toBeUndefined();
    expect(stack.log.lines.some((line) => line.includes('under two spellings of one GUID'))).toBe(true);
  }, 120_000);
});
