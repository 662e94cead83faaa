import { requestSync } from '../../shared/sync/startSync';
import { sweepRuns } from '../../shared/sync/sweepRuns';
import { rowsAccountedFor } from '../../shared/runs/runRecord';
import { startTestStack, type TestStack } from '../helpers/testStack';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { waitFor } from '../helpers/expectations';

describe('the timer sweep picks up runs a crash left behind', () => {
  let stack: TestStack;
  afterEach(async () => {
    await stack?.stop();
  });

  it('re-sends the start of a run whose message was lost between the insert and the send', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 50);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    await stack.app.hosts[0].stop();
    const { runs } = await requestSync(stack.app.deps, { trigger: 'timer' });
    // The crash: the run record exists, its message does not.
    await stack.app.deps.storage.runQueue.clearMessages();
    stack.app.hosts[0].start();
    expect(await sweepRuns(stack.app.deps)).toEqual({
      restarted: [],
      finalizing: [],
      stalled: [],
      expired: [],
      statesDeleted: [],
      locksFreed: [],
      notified: [],
    });
    // Five minutes later the sweep sees a queued run nobody works on.
    const later = { ...stack.app.deps, clock: { ...stack.app.deps.clock, now: () => Date.now() + 6 * 60_000 } };
    expect(await sweepRuns(later)).toEqual({
      restarted: [runs[0].runId],
      finalizing: [],
      stalled: [],
      expired: [],
      statesDeleted: [],
      locksFreed: [],
      notified: [],
    });
    const [run] = await stack.app.waitForRuns([runs[0].runId], { timeoutMs: 30_000 });
    expect(run.status).toBe('completed');
    expect(rowsAccountedFor(run)).toBe(run.rowsRead);
    expect(stack.braze.profiles.size).toBe(expectedBraze([profiles]).size);
  });

  it('finalizes a run whose last batch was recorded but whose finalize request was lost', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 50);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    // No batch is sent until the run worker has stopped: the last batch's finalize request then finds nobody, and is lost.
    await stack.app.hosts[1].stop();
    const { runs } = await requestSync(stack.app.deps, { trigger: 'timer' });
    const runId = runs[0].runId;
    await waitFor(async () => (await stack.app.deps.runs.get(runId))!.enqueueDone);
    await stack.app.hosts[0].stop();
    stack.app.hosts[1].start();
    await waitFor(async () => (await stack.app.deps.runs.get(runId))!.usersDelivered === 50);
    await stack.app.deps.storage.runQueue.clearMessages();
    expect((await stack.app.deps.runs.get(runId))!.status).toBe('sending');
    stack.app.hosts[0].start();
    expect(await sweepRuns(stack.app.deps)).toEqual({
      restarted: [],
      finalizing: [runId],
      stalled: [],
      expired: [],
      statesDeleted: [],
      locksFreed: [],
      notified: [],
    });
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expect(run.status).toBe('completed');
    expect(run.finishedAt).toBeDefined();
  });

  it('removes ended runs once they outlive RUN_RETENTION_DAYS: records, batches and blobs', async () => {
    stack = await startTestStack({ env: { RUN_RETENTION_DAYS: '30' } });
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 2000).values(), '2026/11/28/0600', 1);
    const { runs } = await requestSync(stack.app.deps, { trigger: 'timer' });
    const runId = runs[0].runId;
    expect((await stack.app.waitForRuns([runId], { timeoutMs: 30_000 }))[0].status).toBe('completed');
    const later = (days: number) => ({ ...stack.app.deps, clock: { ...stack.app.deps.clock, now: () => Date.now() + days * 24 * 3600_000 } });
    expect((await sweepRuns(later(29))).expired).toEqual([]);
    expect((await sweepRuns(later(31))).expired).toEqual([runId]);
    expect(await stack.app.deps.runs.get(runId)).toBeUndefined();
    const left: string[] = [];
    for await (const entity of stack.app.deps.storage.runsTable.listEntities())
      if (String(entity.partitionKey).startsWith(runId)) left.push(String(entity.rowKey));
    expect(left).toEqual([]);
    for await (const item of stack.app.deps.storage.stateContainer.listBlobsFlat({ prefix: `runs/${runId}/` })) left.push(item.name);
    expect(left).toEqual([]);
    // The destination's delivered state stays: the next refresh still diffs against it.
    const state: string[] = [];
    for await (const item of stack.app.deps.storage.stateContainer.listBlobsFlat({ prefix: 'state/' })) state.push(item.name);
    expect(state.length).toBeGreaterThan(1);
    expect(state.filter((name) => name.endsWith('/manifest.json'))).toEqual([expect.stringContaining(`/${runId}/manifest.json`)]);
  });
});
