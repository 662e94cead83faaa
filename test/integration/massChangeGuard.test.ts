import { HttpRequest, InvocationContext } from '@azure/functions';
import { QueueServiceClient } from '@azure/storage-queue';
import { runApprove } from '../../functions/runApprove';
import { runCancel } from '../../functions/runCancel';
import { runPreview } from '../../functions/runPreview';
import { runStatus } from '../../functions/runStatus';
import { requestSync } from '../../shared/sync/startSync';
import { resumeRun } from '../../shared/sync/resumeRun';
import { runFolder } from '../../shared/runs/runBlobs';
import { stateFolder } from '../../shared/state/deliveredState';
import type { RunRecord } from '../../shared/runs/runRecord';
import { stacksOnSharedAzurite, testConfig, type TestStack } from '../helpers/testStack';
import { expectedBraze, makeProfiles, writeRefresh, type ModelProfile } from '../helpers/profileModel';
import { brazeMismatches, expectExactCounts } from '../helpers/expectations';

const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });
const post = (route: 'approve' | 'cancel', runId: string) =>
  (route === 'approve' ? runApprove : runCancel)(
    new HttpRequest({ method: 'POST', url: `http://localhost/api/runs/${runId}/${route}`, params: { id: runId } }),
    context(),
  );
const get = (handler: typeof runStatus, runId: string) =>
  handler(new HttpRequest({ method: 'GET', url: `http://localhost/api/runs/${runId}`, params: { id: runId } }), context());

async function sync(stack: TestStack): Promise<RunRecord> {
  const { runs, problems } = await requestSync(stack.app.deps, { trigger: 'http' });
  expect(problems).toEqual([]);
  const [run] = await stack.app.waitForRuns([runs[0].runId], { timeoutMs: 60_000 });
  return run;
}

async function blobsUnder(stack: TestStack, prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const item of stack.app.deps.storage.stateContainer.listBlobsFlat({ prefix })) names.push(item.name);
  return names;
}

interface PreviewBody {
  held?: string[];
  profiles: { wouldSend: number; leaving: number };
  brazeRequests: number;
  segments: Record<string, { joiners: number; leavers: number; changed: number; unchanged: number }>;
  sample: { identifier: string; change: string }[];
}

const refresh1 = makeProfiles(1, 600);
/** A broken export upstream: HighValue's files hold a tenth of its members; Newsletter is whole. */
function truncated(profiles: Map<string, ModelProfile>): Map<string, ModelProfile> {
  const next = new Map<string, ModelProfile>();
  let n = 0;
  for (const [id, p] of profiles) {
    const segments = new Set(p.segments);
    if (segments.has('HighValue') && n++ % 10 !== 0) segments.delete('HighValue');
    if (segments.size > 0) next.set(id, { ...p, segments });
  }
  return next;
}
const highValueMembers = [...refresh1.values()].filter((p) => p.segments.has('HighValue')).length;

describe('the guard against mass change', () => {
  const stacks = stacksOnSharedAzurite();
  let stack: TestStack | undefined;

  it('holds a refresh that would clear most of a segment, sends nothing, shows why, and once approved sends exactly its preview', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    const first = await sync(stack);
    // The first sync of a destination is never held.
    expect(first).toMatchObject({ status: 'completed', staged: false });
    const applied = stack.braze.stats.objectsApplied;

    const broken = truncated(refresh1);
    await writeRefresh(deps.storage.exportContainer, broken.values(), '2026/11/29/0600');
    const held = await sync(stack);
    expect(held.status).toBe('held');
    expect(held.heldReason).toMatch(
      new RegExp(`^ci_high_value: \\d+ of its ${highValueMembers} members would be cleared \\(\\d+(\\.\\d)?%; the guard allows 20%\\)$`),
    );
    expect(stack.braze.stats.objectsApplied).toBe(applied);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1]))).toEqual([]);
    expect((await deps.destinations.statePointer(held.modelJsonPath))?.runId).toBe(first.runId);
    expect(stack.log.records).toContainEqual(expect.objectContaining({ connectorEvent: 'RunHeld', runId: held.runId, reason: held.heldReason }));
    // Nothing in the log or the reason names a profile.
    expect(stack.log.lines.filter((l) => l.includes('@example.com'))).toEqual([]);

    const status = await get(runStatus, held.runId);
    expect(status.jsonBody).toMatchObject({ status: 'held', note: expect.stringContaining(`POST /api/runs/${held.runId}/approve`) });
    const previewAnswer = await get(runPreview, held.runId);
    expect(previewAnswer.status).toBe(200);
    const preview = previewAnswer.jsonBody as PreviewBody;
    expect(preview.held).toEqual([held.heldReason]);
    const cleared = highValueMembers - [...broken.values()].filter((p) => p.segments.has('HighValue')).length;
    expect(preview.segments.ci_high_value.leavers).toBe(cleared);
    expect(preview.sample.length).toBeGreaterThan(0);
    expect(JSON.stringify(preview)).not.toContain('@example.com');
    // A held run is not resumed: it is approved or cancelled.
    expect(await resumeRun(deps, held.runId)).toMatchObject({ kind: 'refused', reason: expect.stringContaining('approve') });

    expect((await post('approve', held.runId)).status).toBe(202);
    const [approved] = await stack.app.waitForRuns([held.runId], { timeoutMs: 60_000 });
    expect(approved).toMatchObject({ status: 'completed', approved: true });
    expectExactCounts(approved);
    expect(approved.usersEnqueued).toBe(preview.profiles.wouldSend);
    expect(approved.exitsEnqueued).toBe(preview.profiles.leaving);
    expect(approved.usersDelivered).toBe(preview.profiles.wouldSend);
    expect(approved.brazeRequests).toBe(preview.brazeRequests);
    expect(stack.braze.stats.objectsApplied - applied).toBe(preview.profiles.wouldSend);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, broken]))).toEqual([]);
    expect((await deps.destinations.statePointer(approved.modelJsonPath))?.runId).toBe(approved.runId);
    // A second approval changes nothing.
    expect((await post('approve', held.runId)).status).toBe(409);
  }, 150_000);

  it('an approval that failed after it was recorded may be given again, and the run then sends', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    await sync(stack);
    const broken = truncated(refresh1);
    await writeRefresh(deps.storage.exportContainer, broken.values(), '2026/11/29/0600');
    const held = await sync(stack);
    expect(held.status).toBe('held');

    // The approval is recorded, then its start cannot be put on the queue (a real client, a queue
    // that does not exist): the run is approved and enqueuing, and nothing moves it.
    const runQueue = deps.storage.runQueue;
    deps.storage.runQueue = QueueServiceClient.fromConnectionString(stack.azurite.connectionString).getQueueClient('no-such-queue');
    try {
      await expect(post('approve', held.runId)).rejects.toMatchObject({ statusCode: 404 });
    } finally {
      deps.storage.runQueue = runQueue;
    }
    expect(await deps.runs.get(held.runId)).toMatchObject({ status: 'enqueuing', approved: true });

    expect((await post('approve', held.runId)).status).toBe(202);
    const [approved] = await stack.app.waitForRuns([held.runId], { timeoutMs: 60_000 });
    expect(approved).toMatchObject({ status: 'completed', approved: true });
    expectExactCounts(approved);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, broken]))).toEqual([]);
    // Once it has read on, another approval changes nothing.
    expect((await post('approve', held.runId)).status).toBe(409);
  }, 150_000);

  it('cancelled, a held run leaves Braze and the delivered state untouched and nothing of it behind', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    const first = await sync(stack);
    await writeRefresh(deps.storage.exportContainer, truncated(refresh1).values(), '2026/11/29/0600');
    const held = await sync(stack);
    expect(held.status).toBe('held');
    const applied = stack.braze.stats.objectsApplied;

    const answer = await post('cancel', held.runId);
    expect(answer.status).toBe(200);
    const cancelled = (await deps.runs.get(held.runId))!;
    expect(cancelled.status).toBe('cancelled');
    expect(stack.braze.stats.objectsApplied).toBe(applied);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1]))).toEqual([]);
    expect((await deps.destinations.statePointer(held.modelJsonPath))?.runId).toBe(first.runId);
    expect(await deps.destinations.activeRun(held.modelJsonPath)).toBeUndefined();
    expect(await blobsUnder(stack, stateFolder(held.modelJsonPath, held.runId))).toEqual([]);
    expect((await blobsUnder(stack, `${runFolder(held.runId)}/`)).filter((name) => !name.endsWith('/preview.json'))).toEqual([]);
    expect(stack.log.records).toContainEqual(expect.objectContaining({ connectorEvent: 'RunCancelled', runId: held.runId }));
    expect((await post('approve', held.runId)).status).toBe(409);

    // The next refresh diffs against the state the cancelled run left alone: refresh 1's.
    const fixed = new Map([...refresh1].map(([id, p]) => [id, { ...p, points: id.endsWith('7') ? p.points + 1 : p.points }]));
    await writeRefresh(deps.storage.exportContainer, fixed.values(), '2026/11/30/0600');
    const next = await sync(stack);
    expect(next.status).toBe('completed');
    expect(next.usersEnqueued).toBe([...fixed.keys()].filter((id) => id.endsWith('7')).length);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, fixed]))).toEqual([]);
  }, 150_000);

  it('sends a refresh within the guard without waiting, and holds one that changes more profiles than a configured share', async () => {
    const config = testConfig({ guard: { maxClearedShare: 0.2, maxChangedShare: 0.5, minProfiles: 10, maxErasures: 100 } });
    stack = await stacks.start({ config });
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    await sync(stack);
    // A tenth change their points: within both limits.
    const some = new Map([...refresh1].map(([id, p], n) => [id, { ...p, points: n % 10 === 0 ? p.points + 1 : p.points }]));
    await writeRefresh(deps.storage.exportContainer, some.values(), '2026/11/29/0600');
    const within = await sync(stack);
    expect(within).toMatchObject({ status: 'completed', staged: true, approved: false, usersEnqueued: 60 });
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, some]))).toEqual([]);
    // Everyone's points change: more than half the destination's profiles.
    const all = new Map([...some].map(([id, p]) => [id, { ...p, points: p.points + 2 }]));
    await writeRefresh(deps.storage.exportContainer, all.values(), '2026/11/30/0600');
    const held = await sync(stack);
    expect(held.status).toBe('held');
    expect(held.heldReason).toBe('600 profiles would change, 100% of the 600 Braze holds for this destination (the guard allows 50%)');
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, some]))).toEqual([]);
  }, 150_000);

  it('lets a newer refresh supersede a held run', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    await sync(stack);
    await writeRefresh(deps.storage.exportContainer, truncated(refresh1).values(), '2026/11/29/0600');
    const held = await sync(stack);
    expect(held.status).toBe('held');
    // CI's next refresh is whole again.
    const whole = makeProfiles(1, 610);
    await writeRefresh(deps.storage.exportContainer, whole.values(), '2026/11/30/0600');
    const newer = await sync(stack);
    expect(newer.status).toBe('completed');
    expect((await deps.runs.get(held.runId))!).toMatchObject({ status: 'superseded', supersededBy: newer.runId });
    expect(newer.usersEnqueued).toBe(10);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, whole]))).toEqual([]);
  }, 150_000);
});
