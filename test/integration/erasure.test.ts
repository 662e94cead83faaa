import { HttpRequest, InvocationContext } from '@azure/functions';
import { reconcileHttp } from '../../functions/reconcileHttp';
import { runApprove } from '../../functions/runApprove';
import { runPreview } from '../../functions/runPreview';
import { parseSyncConfig } from '../../shared/config/syncConfig';
import { rejectsReportName } from '../../shared/runs/runBlobs';
import type { RunRecord } from '../../shared/runs/runRecord';
import { keyHash } from '../../shared/state/profileIndex';
import { requestSync } from '../../shared/sync/startSync';
import { csv, writeExport } from '../helpers/exportBuilder';
import { expectExactCounts } from '../helpers/expectations';
import { customerId } from '../helpers/profileModel';
import { stacksOnSharedAzurite, testConfig, type TestStack } from '../helpers/testStack';

/**
 * Erasure through POST /users/delete as Braze documents it (braze-docs
 * _docs/_api/endpoints/user_data/post_user_delete.md: up to 50 identifiers of a kind a request, an
 * e-mail with a prioritization, `deleted` counting the users queued; deleting logs no data point,
 * _docs/_user_guide/data/data_points.md).
 */
const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });
const row = (n: number) => [customerId(n), `user${n}@example.com`, `First${n}`, String(n)];

async function refresh(stack: TestStack, members: number[], erase: number[], folder: string, dryRun = false): Promise<RunRecord> {
  await writeExport(stack.app.deps.storage.exportContainer, {
    destination: 'BrazeExport',
    segments: [
      { table: 'HighValue', runFolder: folder, partitions: [csv(members.map(row))] },
      { table: 'Newsletter', runFolder: folder, partitions: [''] },
      { table: 'Erasures', runFolder: folder, partitions: [erase.length ? csv(erase.map(row)) : ''] },
    ],
  });
  const outcome = await requestSync(stack.app.deps, { trigger: 'http', dryRun });
  expect(outcome.problems).toEqual([]);
  const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
  return run;
}
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('erasure: users deleted from Braze', () => {
  const stacks = stacksOnSharedAzurite();
  const config = (maxErasures: number | null = 100) =>
    testConfig({ erasure: { table: 'Erasures' }, guard: { maxClearedShare: 0.2, maxChangedShare: null, minProfiles: 10, maxErasures } });

  it('deletes the users the erasure table lists, once, out of the state, with their segment rows rejected and each deletion on record', async () => {
    const stack = await stacks.start({
      config: config(),
      braze: { segments: { 'seg-high-value': 'ci_high_value', ci_newsletter: 'ci_newsletter' }, exportDelayMs: 200 },
      env: { RECONCILE_POLL_SECONDS: '1' },
    });
    const braze = stack.braze;
    const first = await refresh(stack, range(1, 30), [], '2026/11/28/0600');
    expect(first.status).toBe('completed');
    expect(braze.profiles.size).toBe(30);

    // Profile 3 left the segment and asked to be erased; profile 4 asked too but CI still lists it; 99 is no Braze user.
    const run = await refresh(
      stack,
      range(1, 30).filter((n) => n !== 3),
      [3, 4, 99],
      '2026/11/29/0600',
    );
    expect(run.status).toBe('completed');
    expectExactCounts(run);
    expect(run.erasuresEnqueued).toBe(3);
    expect(braze.stats.deleteRequests).toBe(1);
    expect(braze.stats.usersDeleted).toBe(2);
    expect(braze.profile(`external_id:${customerId(3)}`)).toBeUndefined();
    expect(braze.profile(`external_id:${customerId(4)}`)).toBeUndefined();
    expect(braze.profiles.size).toBe(28);
    // Profile 4's segment row is not sent, and says why (its identifier, never its e-mail).
    expect(run.rowsRejectedInput).toBe(1);
    const report = (await stack.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(run.runId)).downloadToBuffer()).toString('utf8');
    expect(report).toMatch(
      new RegExp(`rejected,[^,]*HighValue_1\\.csv,3,\\(erased\\),"?the destination's erasure table lists this user: deleted from Braze, not sent`),
    );
    // Each deletion is on record for audit: the key's hash, the run, when — no identifier.
    const audit = await stack.app.deps.erasures.list(run.modelJsonPath);
    expect(audit.map((e) => e.keyHash).sort()).toEqual([3, 4, 99].map((n) => keyHash(`x:${customerId(n)}`)).sort());
    expect(audit.every((e) => e.runId === run.runId && !Number.isNaN(Date.parse(e.erasedAt)))).toBe(true);
    expect(JSON.stringify(audit)).not.toContain(customerId(3));
    expect(report).not.toContain(customerId(4));

    // The next refresh still lists them: nobody is deleted again, nobody comes back.
    const again = await refresh(
      stack,
      range(1, 30).filter((n) => n !== 3),
      [3, 4, 99],
      '2026/11/30/0600',
    );
    expect(again.status).toBe('completed');
    expectExactCounts(again);
    expect(again.erasuresEnqueued).toBe(0);
    expect(braze.stats.deleteRequests).toBe(1);
    expect(braze.profile(`external_id:${customerId(4)}`)).toBeUndefined();
    expect(again.usersEnqueued).toBe(0);

    // A reconcile finds profile 4 a CI member Braze lacks: it neither brings it back nor deletes, and says so.
    const answer = await reconcileHttp(
      new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify({ destination: 'BrazeExport' }) } }),
      context(),
    );
    const [reconciled] = await stack.app.waitForRuns([(answer.jsonBody as { runId: string }).runId], { timeoutMs: 60_000 });
    expect(reconciled.status).toBe('completed');
    expect(reconciled.usersEnqueued).toBe(0);
    expect(braze.profile(`external_id:${customerId(4)}`)).toBeUndefined();
    expect(braze.stats.deleteRequests).toBe(1);
    const reconcileReport = (await stack.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(reconciled.runId)).downloadToBuffer()).toString(
      'utf8',
    );
    // The three erasure rows, and profile 4's segment row.
    expect(reconcileReport.match(/a reconcile leaves it to the next sync, which deletes it/g)).toHaveLength(4);
    expectExactCounts(reconciled);
  }, 120_000);

  it('previews deletions, holds a run that would delete more than the guard allows, and deletes once approved', async () => {
    const stack = await stacks.start({ config: config(2) });
    const braze = stack.braze;
    await refresh(stack, range(1, 20), [], '2026/11/28/0600');
    const dry = await refresh(stack, range(1, 20), [5, 6, 7], '2026/11/29/0600', true);
    const preview = (
      await runPreview(new HttpRequest({ url: `http://localhost/api/runs/${dry.runId}/preview`, method: 'GET', params: { id: dry.runId } }), context())
    ).jsonBody as { profiles: Record<string, number>; dataPoints: number; sample: { change: string; identifier: string }[] };
    expect(preview.profiles).toMatchObject({ wouldSend: 3, erasing: 3 });
    expect(preview.dataPoints).toBe(0);
    expect(
      preview.sample
        .filter((s) => s.change === 'erases')
        .map((s) => s.identifier)
        .sort(),
    ).toEqual([5, 6, 7].map((n) => `external_id ${customerId(n)}`));
    expect(braze.stats.deleteRequests).toBe(0);

    const held = await refresh(stack, range(1, 20), [5, 6, 7], '2026/11/29/0600');
    expect(held.status).toBe('held');
    expect(held.heldReason).toMatch(/3 users would be deleted from Braze, which cannot be undone \(the guard allows 2 a run\)/);
    expect(braze.stats.deleteRequests).toBe(0);
    const approved = await runApprove(
      new HttpRequest({ url: `http://localhost/api/runs/${held.runId}/approve`, method: 'POST', params: { id: held.runId } }),
      context(),
    );
    expect(approved.status).toBe(202);
    const [done] = await stack.app.waitForRuns([held.runId], { timeoutMs: 60_000 });
    expect(done.status).toBe('completed');
    expect(braze.stats.usersDeleted).toBe(3);
    expect(braze.profiles.size).toBe(17);
  }, 120_000);

  it('holds even a first sync that would delete too many, and refuses an erasure table that is also a segment', async () => {
    const stack = await stacks.start({ config: config(0) });
    const first = await refresh(stack, range(1, 5), [9], '2026/11/28/0600');
    expect(first.status).toBe('held');
    expect(stack.braze.stats.requests).toBe(0);
    const parse = (erasure: unknown) =>
      parseSyncConfig(
        JSON.stringify({ destinations: [{ name: 'D', segments: [{ table: 'T', brazeSegmentId: 's' }], matching: { customerIdColumn: 'Id' }, erasure }] }),
        'test',
      );
    expect(() => parse({ table: 'T' })).toThrow(/erasure\.table.*"T" is also a segment/s);
    expect(() => parse({ table: 'E', deleteAll: true })).toThrow(/deleteAll/);
    expect(parse({ table: 'E' }).destinations[0].guard.maxErasures).toBe(100);
  }, 120_000);
});
