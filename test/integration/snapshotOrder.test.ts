import { BrazeAuthError } from '../../shared/errors';
import { deliverBatch } from '../../shared/sync/deliverBatch';
import { startRun } from '../../shared/sync/startRun';
import { resumeRun } from '../../shared/sync/resumeRun';
import { haltRun } from '../../shared/sync/runEvents';
import { requestSync } from '../../shared/sync/startSync';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import type { RunStore } from '../../shared/runs/runStore';
import type { RunRecord } from '../../shared/runs/runRecord';
import { stateFolder } from '../../shared/state/deliveredState';
import { stacksOnSharedAzurite, type TestStack } from '../helpers/testStack';
import { expectedBraze, makeProfiles, writeRefresh, type ModelProfile } from '../helpers/profileModel';
import { brazeMismatches, expectExactCounts, waitFor } from '../helpers/expectations';

async function requestRun(stack: TestStack, options: { force?: boolean } = {}): Promise<string> {
  const { runs, problems } = await requestSync(stack.app.deps, { trigger: 'http', force: options.force });
  expect(problems).toEqual([]);
  return runs[0].runId;
}

async function syncOnce(stack: TestStack, options: { force?: boolean } = {}) {
  const [run] = await stack.app.waitForRuns([await requestRun(stack, options)], { timeoutMs: 60_000 });
  return run;
}

async function stateFolders(stack: TestStack): Promise<string[]> {
  const folders = new Set<string>();
  for await (const item of stack.app.deps.storage.stateContainer.listBlobsFlat({ prefix: 'state/' })) folders.add(item.name.split('/').slice(0, 3).join('/'));
  return [...folders].sort();
}

/** A copy of some profiles, so a later refresh can change them without touching the earlier one. */
function changed(profiles: Map<string, ModelProfile>, change: (p: ModelProfile, n: number) => ModelProfile | undefined): Map<string, ModelProfile> {
  const next = new Map<string, ModelProfile>();
  let n = 0;
  for (const [id, p] of profiles) {
    const copy = change({ ...p, segments: new Set(p.segments) }, n++);
    if (copy) next.set(id, copy);
  }
  return next;
}

describe('the newest snapshot wins in Braze, whatever order refreshes arrive in', () => {
  const stacks = stacksOnSharedAzurite();
  let stack: TestStack | undefined;

  const refresh1 = makeProfiles(1, 400);
  // Refresh 2: a tenth leave, the rest earn points.
  const refresh2 = changed(refresh1, (p, n) => (n % 10 === 0 ? undefined : { ...p, points: p.points + 7 }));

  it('sends nothing for a refresh older than the delivered one, says why, and sends it only when forced', async () => {
    stack = await stacks.start();
    const container = stack.app.deps.storage.exportContainer;
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    expect((await syncOnce(stack)).status).toBe('completed');
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    const run2 = await syncOnce(stack);
    expect(run2.status).toBe('completed');
    const applied = stack.braze.stats.objectsApplied;

    // Refresh 1's files arrive again (a late copy, a re-run by hand): new ETags, an older snapshot.
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    const stale = await syncOnce(stack);
    expect(stale.status).toBe('superseded');
    expect(stale.supersededBy).toBe(run2.runId);
    expect(stale.error).toContain('refresh 2026/11/28/0600 is older than refresh 2026/11/29/0600, which run');
    expect(stack.braze.stats.objectsApplied).toBe(applied);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, refresh2]))).toEqual([]);
    expect((await stack.app.deps.destinations.statePointer(stale.modelJsonPath))?.runId).toBe(run2.runId);
    // The destination is freed right after the run ends.
    await waitFor(async () => (await stack!.app.deps.destinations.activeRun(stale.modelJsonPath)) === undefined);
    expect(stack.log.records).toContainEqual(expect.objectContaining({ connectorEvent: 'RunSuperseded', runId: stale.runId, previousStatus: 'queued' }));

    // Forced, it is sent, and its status says Braze now holds the older snapshot.
    const forced = await syncOnce(stack, { force: true });
    expect(forced.status).toBe('completed');
    expect(forced.olderThanDelivered).toContain('older than refresh 2026/11/29/0600');
    expectExactCounts(forced);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, refresh2, refresh1]))).toEqual([]);
    expect((await stack.app.deps.destinations.statePointer(forced.modelJsonPath))?.runId).toBe(forced.runId);
    // Only the forced run's state is left: the superseded one wrote none, the replaced ones went.
    expect(await stateFolders(stack)).toEqual([stateFolder(forced.modelJsonPath, forced.runId).replace(/\/$/, '')]);
  }, 120_000);

  it('supersedes a queued older run when a newer one takes the destination first', async () => {
    stack = await stacks.start();
    const container = stack.app.deps.storage.exportContainer;
    await stack.app.hosts[0].stop();
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    const olderId = await requestRun(stack);
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    const newerId = await requestRun(stack);
    // The newer run's start is handled first; the older one's message waits on the queue.
    expect((await startRun(stack.app.deps, newerId)).kind).toBe('done');
    const older = (await stack.app.deps.runs.get(olderId))!;
    expect(older).toMatchObject({ status: 'superseded', supersededBy: newerId });
    expect(older.error).toContain('newer refresh 2026/11/29/0600');

    stack.app.hosts[0].start();
    const [newer, olderAfter] = await stack.app.waitForRuns([newerId, olderId], { timeoutMs: 60_000 });
    expect(newer.status).toBe('completed');
    expect(olderAfter.status).toBe('superseded');
    expect(brazeMismatches(stack.braze, expectedBraze([refresh2]))).toEqual([]);
  }, 120_000);

  it('never lets an older run that starts after a newer one completed roll Braze back', async () => {
    stack = await stacks.start();
    const container = stack.app.deps.storage.exportContainer;
    await stack.app.hosts[0].stop();
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    const olderId = await requestRun(stack);
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    const newerId = await requestRun(stack);
    // The older run's start message is lost for now (and the newer one claims before it): only the
    // newer run is on the queue.
    await stack.app.deps.storage.runQueue.clearMessages();
    stack.app.hosts[0].start();
    expect((await startRun(stack.app.deps, newerId)).kind).toBe('done');
    const [newer] = await stack.app.waitForRuns([newerId], { timeoutMs: 60_000 });
    expect(newer.status).toBe('completed');
    // The older run was already superseded when the newer one claimed; starting it again changes nothing.
    expect((await startRun(stack.app.deps, olderId)).kind).toBe('done');
    expect((await stack.app.deps.runs.get(olderId))!.status).toBe('superseded');
    expect(brazeMismatches(stack.braze, expectedBraze([refresh2]))).toEqual([]);
  }, 120_000);

  it('undoes what a superseded run delivered before it halted: Braze ends at the newer refresh', async () => {
    // Several shards, so the halted run has several batches, of which one reaches Braze.
    stack = await stacks.start({ env: { PROFILES_PER_SHARD: '100' } });
    const deps = stack.app.deps;
    const container = deps.storage.exportContainer;
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    expect((await syncOnce(stack)).status).toBe('completed');

    // Refresh 2 is read and queued; one of its batches reaches Braze, then Braze refuses the key.
    await stack.app.hosts[1].stop();
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    const haltedId = await requestRun(stack);
    await waitFor(async () => (await deps.runs.get(haltedId))!.enqueueDone, 60_000);
    const batches: string[] = [];
    for (;;) {
      const received = await deps.storage.batchQueue.receiveMessages({ numberOfMessages: 32 });
      if (received.receivedMessageItems.length === 0) break;
      for (const m of received.receivedMessageItems) {
        batches.push(m.messageText);
        await deps.storage.batchQueue.deleteMessage(m.messageId, m.popReceipt);
      }
    }
    expect(batches.length).toBeGreaterThan(1);
    const applied = stack.braze.stats.objectsApplied;
    expect((await deliverBatch(deps, batches[0])).kind).toBe('done');
    expect(stack.braze.stats.objectsApplied).toBeGreaterThan(applied);
    await haltRun(deps, haltedId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    for (const message of batches.slice(1)) await deps.storage.batchQueue.sendMessage(message);

    // Refresh 3 holds refresh 1's profiles again: what the halted run changed must be changed back.
    const refresh3 = changed(refresh1, (p) => p);
    await writeRefresh(container, refresh3.values(), '2026/11/30/0600');
    stack.app.hosts[1].start();
    const newer = await syncOnce(stack);
    expect(newer.status).toBe('completed');
    expect((await deps.runs.get(haltedId))!).toMatchObject({ status: 'superseded', supersededBy: newer.runId });
    expect(newer.takesOver).toBe(haltedId);
    expectExactCounts(newer);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, refresh3]))).toEqual([]);
    // Once the newer run completed, nothing of the halted one is needed: its blobs are gone.
    expect(await stateFolders(stack)).toEqual([stateFolder(newer.modelJsonPath, newer.runId).replace(/\/$/, '')]);
    const left: string[] = [];
    for await (const item of deps.storage.stateContainer.listBlobsFlat({ prefix: `runs/${haltedId}/` })) left.push(item.name);
    expect(left.filter((name) => !name.endsWith('/preview.json') && !name.endsWith('/rejects.csv'))).toEqual([]);
  }, 150_000);

  it('leaves the takeover of a halted run to whoever claims next when the worker superseding it dies before it claims', async () => {
    stack = await stacks.start({ env: { PROFILES_PER_SHARD: '100' } });
    const deps = stack.app.deps;
    const container = deps.storage.exportContainer;
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    expect((await syncOnce(stack)).status).toBe('completed');
    await stack.app.hosts[1].stop();
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    const haltedId = await requestRun(stack);
    await waitFor(async () => (await deps.runs.get(haltedId))!.enqueueDone, 60_000);
    const [first] = (await deps.storage.batchQueue.receiveMessages({ numberOfMessages: 1 })).receivedMessageItems;
    await deps.storage.batchQueue.deleteMessage(first.messageId, first.popReceipt);
    expect((await deliverBatch(deps, first.messageText)).kind).toBe('done');
    await haltRun(deps, haltedId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));

    await stack.app.hosts[0].stop();
    const refresh3 = changed(refresh1, (p) => p);
    await writeRefresh(container, refresh3.values(), '2026/11/30/0600');
    const newerId = await requestRun(stack);
    // The worker superseding the halted run dies before it claims the destination.
    const dying: ConnectorDeps = {
      ...deps,
      destinations: new Proxy(deps.destinations, {
        get(target, property, receiver) {
          if (property === 'claim') return () => Promise.reject(new Error('worker died'));
          return Reflect.get(target, property, receiver) as unknown;
        },
      }),
    };
    await expect(startRun(dying, newerId)).rejects.toThrow('worker died');
    expect((await deps.runs.get(haltedId))!.status).toBe('superseded');

    // Its message comes back: the run claims, and takes over what the halted one may have delivered.
    stack.app.hosts[0].start();
    stack.app.hosts[1].start();
    await requestRun(stack);
    const [newer] = await stack.app.waitForRuns([newerId], { timeoutMs: 60_000 });
    expect(newer).toMatchObject({ status: 'completed', takesOver: haltedId });
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, refresh3]))).toEqual([]);
  }, 150_000);

  /**
   * Refresh 1 and then 2 are synced; refresh 1 comes again and its run's worker dies where `die`
   * says, with the claim landed. The retry refuses it: Braze keeps refresh 2.
   */
  async function refusesStaleRunWhoseWorkerDied(die: (deps: ConnectorDeps) => ConnectorDeps, afterDeath?: (staleId: string, run2: RunRecord) => Promise<void>) {
    stack = await stacks.start();
    const deps = stack.app.deps;
    const container = deps.storage.exportContainer;
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    await syncOnce(stack);
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    const run2 = await syncOnce(stack);
    const applied = stack.braze.stats.objectsApplied;

    await stack.app.hosts[0].stop();
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    const staleId = await requestRun(stack);
    await expect(startRun(die(deps), staleId)).rejects.toThrow('worker died');
    expect(await deps.destinations.activeRun(run2.modelJsonPath)).toBe(staleId);
    await afterDeath?.(staleId, run2);

    stack.app.hosts[0].start();
    const [stale] = await stack.app.waitForRuns([staleId], { timeoutMs: 60_000 });
    expect(stale.status).toBe('superseded');
    expect(stale.error).toContain('older than refresh 2026/11/29/0600');
    expect(stack.braze.stats.objectsApplied).toBe(applied);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, refresh2]))).toEqual([]);
  }

  /** The deps with `method` of `store` failing once, as a worker that dies there. */
  function dyingAt(deps: ConnectorDeps, store: 'runs' | 'destinations', method: string): ConnectorDeps {
    let died = false;
    return {
      ...deps,
      [store]: new Proxy(deps[store], {
        get(target, property, receiver) {
          if (property === method && !died)
            return () => {
              died = true;
              return Promise.reject(new Error('worker died'));
            };
          return Reflect.get(target, property, receiver) as unknown;
        },
      }),
    };
  }

  it('refuses an older refresh even when the worker that claimed for it died right after the claim', async () => {
    // The claim lands; the worker dies before it records anything of it.
    await refusesStaleRunWhoseWorkerDied((deps) => dyingAt(deps, 'runs', 'update'));
  }, 120_000);

  it('refuses an older refresh when the worker that claimed for it died after recording its generation, before it looked at the delivered one', async () => {
    // The claim and the run's generation land; the worker dies as it reads the delivered state's pointer.
    await refusesStaleRunWhoseWorkerDied(
      (deps) => dyingAt(deps, 'destinations', 'statePointer'),
      async (staleId, run2) => expect((await stack!.app.deps.runs.get(staleId))!.generation).toBeGreaterThan(run2.generation),
    );
  }, 120_000);

  it('does not take the destination when the run it supersedes moved on first', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    const container = deps.storage.exportContainer;
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    await stack.app.hosts[1].stop();
    const haltedId = await requestRun(stack);
    await waitFor(async () => (await deps.runs.get(haltedId))!.enqueueDone, 60_000);
    await haltRun(deps, haltedId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    expect((await deps.runs.get(haltedId))!.status).toBe('halted');

    await stack.app.hosts[0].stop();
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    const newerId = await requestRun(stack);
    // Between the newer run reading the halted one and superseding it, an operator resumes it.
    let resumed = false;
    const runs = new Proxy(deps.runs, {
      get(target, property, receiver) {
        if (property !== 'get') return Reflect.get(target, property, receiver) as unknown;
        return async (runId: string) => {
          const record = await target.get(runId);
          if (runId === haltedId && !resumed) {
            resumed = true;
            expect((await resumeRun(deps, haltedId)).kind).toBe('resumed');
          }
          return record;
        };
      },
    }) as RunStore;
    const interleaved: ConnectorDeps = { ...deps, runs };
    const step = await startRun(interleaved, newerId);
    expect(resumed).toBe(true);
    expect(step.kind).toBe('deferred');
    expect(await deps.destinations.activeRun((await deps.runs.get(newerId))!.modelJsonPath)).toBe(haltedId);
    expect((await deps.runs.get(haltedId))!.status).toBe('sending');
    expect((await deps.runs.get(newerId))!).toMatchObject({ status: 'queued', generation: 0 });

    // The resumed run finishes, then the newer one runs from the state it left.
    stack.app.hosts[0].start();
    stack.app.hosts[1].start();
    await requestRun(stack);
    const [halted, newer] = await stack.app.waitForRuns([haltedId, newerId], { timeoutMs: 90_000 });
    expect(halted.status).toBe('completed');
    expect(newer.status).toBe('completed');
    expect(newer.generation).toBeGreaterThan(halted.generation);
    expect(brazeMismatches(stack.braze, expectedBraze([refresh1, refresh2]))).toEqual([]);
  }, 150_000);
});
