import { TableClient } from '@azure/data-tables';
import { BlobServiceClient } from '@azure/storage-blob';
import { LeaseLostError } from '../../shared/errors';
import { RunStore } from '../../shared/runs/runStore';
import { BlobLineWriter } from '../../shared/storage/blobLineWriter';
import { startRun } from '../../shared/sync/startRun';
import { runStep } from '../../shared/sync/stepRunner';
import { holdingLease } from '../../shared/sync/lease';
import { requestSync } from '../../shared/sync/startSync';
import { startTestStack, testConfig, type TestStack } from '../helpers/testStack';
import { completeReading } from '../../shared/sync/completeReading';
import { makeProfiles, writeRefresh } from '../helpers/profileModel';
import { waitFor } from '../helpers/expectations';

/** 40 profiles delivered by a completed run, and the same profiles exported again; the completed run's id. */
async function deliveredThenSame(stack: TestStack): Promise<string> {
  const deps = stack.app.deps;
  const profiles = makeProfiles(1, 40);
  await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/27/0600', 1);
  const first = (await requestSync(deps, { trigger: 'http' })).runs[0].runId;
  await waitFor(async () => (await deps.runs.get(first))?.status === 'completed');
  await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
  return first;
}

describe('writers and leases fail loudly', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('a line writer whose upload fails rejects the next write at once instead of waiting for a drain', async () => {
    stack = await startTestStack();
    const container = BlobServiceClient.fromConnectionString(stack.azurite.connectionString).getContainerClient('no-such-container');
    const writer = new BlobLineWriter(container, 'lines.txt', 'text/plain');
    const line = 'x'.repeat(1000);
    const writing = (async () => {
      for (let i = 0; i < 20_000; i++) await writer.writeLine(line);
    })();
    await expect(writing).rejects.toMatchObject({ statusCode: 404 });
    await expect(writer.close()).rejects.toMatchObject({ statusCode: 404 });
  });

  it('a map step whose claim is taken over stops, and commits nothing of its own', async () => {
    stack = await startTestStack({ env: { ENQUEUE_LEASE_MS: '1500' } });
    const deps = stack.app.deps;
    // One big partition, so the map step takes a while.
    await writeRefresh(deps.storage.exportContainer, makeProfiles(1, 60_000).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[0].stop();
    await stack.app.hosts[1].stop();
    const { runs } = await requestSync(deps, { trigger: 'http' });
    const runId = runs[0].runId;
    await startRun(deps, runId);
    const mapping = runStep(deps, runId, 'map', 0).then(
      () => 'finished',
      (error: unknown) => error,
    );
    await waitFor(async () => (await deps.units.read(runId, 'map', 0))?.state === 'working');
    // Another worker decided this one was dead and took the step.
    await deps.storage.runsTable.updateEntity(
      { partitionKey: runId, rowKey: 'unit-map-00000', state: 'working', owner: '0123456789ab', claimUntil: new Date(Date.now() + 60_000).toISOString() },
      'Replace',
    );
    const stopped = await mapping;
    expect(stopped).toBeInstanceOf(LeaseLostError);
    // Lost to the new holder, or, on a loaded machine, to a renewal that came too late: it stops either way.
    expect((stopped as Error).message).toMatch(/taken over by another worker|ran out before it could be renewed/);
    expect(await deps.units.read(runId, 'map', 0)).toMatchObject({ state: 'working', owner: '0123456789ab' });
    const blobs: string[] = [];
    for await (const item of deps.storage.stateContainer.listBlobsFlat({ prefix: `runs/${runId}/` })) blobs.push(item.name);
    expect(blobs.filter((name) => /\/map\/|rejects-parts/.test(name))).toEqual([]);
  }, 60_000);

  it('a step message that comes before its run is planned (a late copy, a stray) does nothing, and the run then reads every row', async () => {
    stack = await startTestStack();
    const deps = stack.app.deps;
    // The second segment's partition is empty: a step that ran before the plan would finish it with no output at all.
    const profiles = makeProfiles(1, 40);
    for (const p of profiles.values()) p.segments = new Set(['HighValue']);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    await stack.app.hosts[0].stop();
    const { runs } = await requestSync(deps, { trigger: 'http' });
    const runId = runs[0].runId;
    for (const index of [1, 0]) expect(await runStep(deps, runId, 'map', index)).toEqual({ kind: 'done' });
    expect(await runStep(deps, runId, 'shard', 0)).toEqual({ kind: 'done' });
    for (const kind of ['map', 'shard'] as const) expect(await deps.units.list(runId, kind)).toEqual([]);
    expect((await deps.runs.get(runId))?.status).toBe('queued');

    stack.app.hosts[0].start();
    await startRun(deps, runId);
    await waitFor(async () => (await deps.runs.get(runId))?.status === 'completed', 30_000);
    expect(await deps.runs.get(runId)).toMatchObject({ rowsRead: 40, usersDelivered: 40, usersFailed: 0 });
  }, 60_000);

  // Read in steps from their messages, or by the instance that starts the run (a small refresh, the default).
  it.each([
    ['in steps', '0'],
    ['by the starting instance', String(8 * 1024 * 1024)],
  ])(
    'a run read %s whose finalizer failed after the reading ended is finalized by a retry, without waiting for the sweep',
    async (_how, smallRefreshBytes) => {
      stack = await startTestStack({ env: { ENQUEUE_LEASE_MS: '1500', SMALL_REFRESH_MAX_BYTES: smallRefreshBytes } });
      const deps = stack.app.deps;
      // The same profiles again: nothing to send, so the worker that ends the reading runs the
      // finalizer itself, and storage fails it once, after the run is finalizing under its lease.
      const first = await deliveredThenSame(stack);
      const store = deps.destinations as unknown as Record<string, unknown>;
      let failures = 0;
      store.settleUncertain = async () => {
        delete store.settleUncertain;
        failures += 1;
        throw new Error('the table answered 503');
      };
      const second = (await requestSync(deps, { trigger: 'http' })).runs[0].runId;
      // The queue hands the failed message back; no sweep runs here.
      await waitFor(async () => (await deps.runs.get(second))?.status === 'completed', 20_000);
      expect(failures).toBe(1);
      expect(await deps.runs.get(second)).toMatchObject({ usersEnqueued: 0, rowsSkippedUnchanged: (await deps.runs.get(first))!.rowsRead });
      expect((await deps.destinations.statePointer((await deps.runs.get(second))!.modelJsonPath))?.runId).toBe(second);
    },
    60_000,
  );

  // A copy of the last shard step that read the run before the reading ended, and found the step
  // done after: it finishes the reading too, finds it finished, and must ask for the finalize the
  // worker that finished it owed — whether the run's batches went through the guard (staged, the
  // default once something was delivered) or straight to the queue.
  it.each([
    ['a guarded run', testConfig()],
    ['an unguarded run', testConfig({ guard: { maxClearedShare: null, maxChangedShare: null, minProfiles: 10, maxErasures: null } })],
  ])(
    'in %s, a copy that comes as the reading ends asks again for the finalize its finisher failed in',
    async (_what, config) => {
      stack = await startTestStack({ config, env: { ENQUEUE_LEASE_MS: '1500' } });
      const deps = stack.app.deps;
      const first = await deliveredThenSame(stack);
      await stack.app.hosts[0].stop();
      const runId = (await requestSync(deps, { trigger: 'http' })).runs[0].runId;
      await startRun(deps, runId);
      for (const index of [0, 1]) expect(await runStep(deps, runId, 'map', index)).toEqual({ kind: 'done' });
      // What the copy read: the run still reading.
      const copyRead = (await deps.runs.get(runId))!;
      expect(copyRead).toMatchObject({ status: 'enqueuing', enqueueDone: false, staged: config.destinations[0].guard.maxClearedShare !== null });
      const store = deps.destinations as unknown as Record<string, unknown>;
      store.settleUncertain = async () => {
        delete store.settleUncertain;
        throw new Error('the table answered 503');
      };
      // The worker that ends the reading runs the finalizer itself (nothing to send), which fails;
      // its own message's retry would ask again, but here it was read on (readHere), which swallows it.
      await expect(runStep(deps, runId, 'shard', 0)).rejects.toThrow('the table answered 503');
      expect(await deps.runs.get(runId)).toMatchObject({ status: 'finalizing', enqueueDone: true });
      // Every other message of the run was handled already, by the copy among them.
      await deps.storage.runQueue.clearMessages();
      await completeReading(deps, copyRead);
      stack.app.hosts[0].start();
      await waitFor(async () => (await deps.runs.get(runId))?.status === 'completed', 30_000);
      expect(await deps.runs.get(runId)).toMatchObject({ usersEnqueued: 0, rowsSkippedUnchanged: (await deps.runs.get(first))!.rowsRead });
    },
    90_000,
  );

  it('a lease is renewed while its work goes on, and lost when renewals fail until it runs out', async () => {
    // A lease of 2 s: long enough that a busy machine renews it in time, short enough to outlive it in the test.
    stack = await startTestStack({ env: { ENQUEUE_LEASE_MS: '2000' } });
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, makeProfiles(1, 10).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[0].stop();
    const { runs } = await requestSync(deps, { trigger: 'http' });
    const runId = runs[0].runId;
    await deps.runs.update(runId, () => ({ leaseOwner: 'aaaaaaaaaaaa', leaseUntil: new Date(Date.now() + 2000).toISOString() }));

    // Renewed: a second finalizer or enqueuer would see the lease held the whole time.
    const seen: boolean[] = [];
    await holdingLease(deps, runId, 'aaaaaaaaaaaa', async (signal) => {
      // Well past the lease's first term: only renewals keep it.
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 300));
        const run = (await deps.runs.get(runId))!;
        seen.push(Date.parse(run.leaseUntil!) > Date.now());
        signal.throwIfAborted();
      }
    });
    expect(seen.every(Boolean)).toBe(true);

    // Storage goes away: renewals fail, and once the lease has run out the work is stopped.
    const broken = {
      ...deps,
      runs: new RunStore(TableClient.fromConnectionString(stack.azurite.connectionString, 'nosuchtable', { allowInsecureConnection: true }), deps.clock),
    };
    let iterations = 0;
    await expect(
      holdingLease(broken, runId, 'aaaaaaaaaaaa', async (signal) => {
        for (; iterations < 200; iterations++) {
          await new Promise((r) => setTimeout(r, 100));
          signal.throwIfAborted();
        }
      }),
    ).rejects.toBeInstanceOf(LeaseLostError);
    // Stopped once the lease ran out (about 20 steps), not after the work's own end.
    expect(iterations).toBeLessThan(200);
  }, 60_000);
});
