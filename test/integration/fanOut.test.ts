import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { startAzurite } from '../../local/azurite';
import { BrazeServer } from '../../local/brazeServer';
import { LocalFunctionApp } from '../../local/stack';
import { diffShard } from '../../shared/reader/diffShard';
import { runFolder } from '../../shared/runs/runBlobs';
import { runSummary, type RunRecord } from '../../shared/runs/runRecord';
import {
  destinationKey,
  isStateRecord,
  readNdjson,
  readPreviousState,
  stateLine,
  stateManifestSchema,
  stateRecordSchema,
} from '../../shared/state/deliveredState';
import { startRun as startReading } from '../../shared/sync/startRun';
import { runStep } from '../../shared/sync/stepRunner';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import { requestSync } from '../../shared/sync/startSync';
import { brazeMismatches, expectExactCounts, runFolderAfterCleanup, waitFor } from '../helpers/expectations';
import { customerId, expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { faultyStorage } from '../helpers/storageFaults';
import { RecordingLogger, startTestStack, TEST_API_KEY, testConfig, type TestStack } from '../helpers/testStack';

const NO_FAULTS = { serverBusy: 0, internalError: 0, resetBefore: 0, resetAfter: 0 };

async function startRun(deps: ConnectorDeps): Promise<string> {
  const outcome = await requestSync(deps, { trigger: 'http' });
  expect(outcome.problems).toEqual([]);
  return outcome.runs[0].runId;
}

async function batchQueueLength(deps: ConnectorDeps): Promise<number> {
  return (await deps.storage.batchQueue.getProperties()).approximateMessagesCount ?? 0;
}

/**
 * A worker process whose storage requests pass a proxy that holds the first request `hold`
 * matches: the worker is then known to be inside a given step, and is killed there. A second
 * worker, on storage directly, finishes the run.
 */
/** How the workers read: every step through the queue unless told otherwise (SMALL_REFRESH_MAX_BYTES, READ_ON_SECONDS). */
const THROUGH_THE_QUEUE = { SMALL_REFRESH_MAX_BYTES: '0', READ_ON_SECONDS: '0' };

async function killedInside(
  hold: (method: string, url: string) => boolean,
  profiles = makeProfiles(1, 4000),
  reading: Record<string, string> = THROUGH_THE_QUEUE,
) {
  const azurite = await startAzurite();
  const braze = new BrazeServer({ apiKey: TEST_API_KEY, latencyMs: 2 });
  const endpoint = await braze.start();
  const proxy = await faultyStorage(azurite.connectionString, NO_FAULTS);
  const env: Record<string, string | undefined> = {
    ...process.env,
    AzureWebJobsStorage: azurite.connectionString,
    EXPORT_CONTAINER: 'customer-insights',
    BRAZE_REST_ENDPOINT: endpoint,
    BRAZE_API_KEY: TEST_API_KEY,
    SYNC_CONFIG: JSON.stringify(testConfig()),
    PROFILES_PER_SHARD: '1000',
    ...reading,
    ENQUEUE_LEASE_MS: '3000',
    LOCAL_LOCK_SECONDS: '3',
    SENDER_BUDGET_MS: '3000',
    BRAZE_REQUEST_TIMEOUT_MS: '2000',
  };
  const log = new RecordingLogger();
  const observer = new LocalFunctionApp({ env: env as Record<string, string>, log });
  const workers: ChildProcess[] = [];
  const spawnWorker = (storage: string) => {
    const child = spawn(process.execPath, [path.join(__dirname, '..', '..', 'dist', 'local', 'worker.js')], {
      env: { ...env, AzureWebJobsStorage: storage },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.resume();
    child.stderr!.resume();
    workers.push(child);
    return child;
  };
  const stop = async () => {
    for (const w of workers) w.kill('SIGKILL');
    await proxy.stop();
    await braze.stop();
    await azurite.stop();
  };
  try {
    await writeRefresh(observer.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const runId = await startRun(observer.deps);
    proxy.proxies.blob.hold = (method, url) => method === 'PUT' && hold(method, decodeURIComponent(url));
    const first = spawnWorker(proxy.connectionString);
    await waitFor(() => proxy.proxies.blob.held > 0, 60_000);
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    proxy.proxies.blob.hold = undefined;
    return { azurite, braze, observer, runId, profiles, spawnWorker, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

describe('a refresh read in steps that many instances share', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  // Through the queue, read on by the instance that worked a step (READ_ON_SECONDS), and read by the
  // instance that starts it (SMALL_REFRESH_MAX_BYTES): in the last two the dead instance held several
  // steps, or the run's whole reading, and the queued copies carry it on.
  it.each([
    ['every step through the queue', THROUGH_THE_QUEUE],
    ['read on by the instance that worked a step', { SMALL_REFRESH_MAX_BYTES: '0', READ_ON_SECONDS: '60' }],
    ['read by the instance that started it', { SMALL_REFRESH_MAX_BYTES: String(8 * 1024 * 1024), READ_ON_SECONDS: '60' }],
  ])(
    'a worker killed inside a map step (%s): another redoes the step, nothing of the dead one counts, Braze gets each profile once',
    async (_path, reading) => {
      // Held when the map step of partition 1 writes its shard output: it has read its partition but not finished.
      const crash = await killedInside((_, url) => /\/runs\/[^/]+\/map\/p0001\./.test(url), undefined, reading);
      try {
        const { observer, runId, braze, profiles } = crash;
        const dead = await observer.deps.units.read(runId, 'map', 1);
        expect(dead?.state).toBe('working');
        expect(braze.stats.objectsApplied).toBe(0);

        crash.spawnWorker(crash.azurite.connectionString);
        const [run] = await observer.waitForRuns([runId], { timeoutMs: 90_000 });
        expect(run.status).toBe('completed');
        expect(run.shards).toBeGreaterThan(1);
        const redone = await observer.deps.units.read(runId, 'map', 1);
        expect(redone?.state).toBe('done');
        expect(redone?.owner).not.toBe(dead?.owner);
        // Rows counted once: the dead step's reading is not in the totals.
        const rows = [...profiles.values()].reduce((n, p) => n + p.segments.size, 0);
        expect(run.rowsRead).toBe(rows);
        expect(run.usersDelivered).toBe(profiles.size);
        expectExactCounts(run);
        // No batch existed before the kill, so none could go twice.
        expect(braze.stats.objectsApplied).toBe(profiles.size);
        expect(brazeMismatches(braze, expectedBraze([profiles]))).toEqual([]);
        // The dead step's blobs go with the run's working blobs, which the finalizer deletes once the run has completed.
        const report = `${runFolder(runId)}/rejects.csv`;
        expect((await runFolderAfterCleanup(observer.deps.storage.stateContainer, runId, [report])).filter((name) => name !== report)).toEqual([]);
      } finally {
        await crash.stop();
      }
    },
    150_000,
  );

  it('a worker killed inside a shard step after it enqueued its batches: the redone step sends the same batches, counted once, and leaves a state the next run agrees with', async () => {
    // Held when shard 1 commits what it sent: every batch of the shard is on the queue by then.
    const crash = await killedInside((_, url) => /\/runs\/[^/]+\/sent\/s0001\./.test(url));
    try {
      const { observer, runId, braze, profiles } = crash;
      const dead = await observer.deps.units.read(runId, 'shard', 1);
      expect(dead?.state).toBe('working');

      crash.spawnWorker(crash.azurite.connectionString);
      const [run] = await observer.waitForRuns([runId], { timeoutMs: 90_000 });
      expect(run.status).toBe('completed');
      expect((await observer.deps.units.read(runId, 'shard', 1))?.owner).not.toBe(dead?.owner);
      expect(run.usersEnqueued).toBe(profiles.size);
      expect(run.usersDelivered).toBe(profiles.size);
      expectExactCounts(run);
      // A batch in flight at the kill may reach Braze twice (updates are idempotent); no more than that.
      expect(braze.stats.objectsApplied).toBeGreaterThanOrEqual(profiles.size);
      expect(braze.stats.objectsApplied).toBeLessThan(profiles.size + 32 * 75);
      expect(brazeMismatches(braze, expectedBraze([profiles]))).toEqual([]);

      // The state the run left is the redone step's: the same refresh again sends nothing.
      await writeRefresh(observer.deps.storage.exportContainer, profiles.values(), '2026/11/29/0600', 2);
      const next = await startRun(observer.deps);
      const [again] = await observer.waitForRuns([next], { timeoutMs: 90_000 });
      expect(again.status).toBe('completed');
      expect(again.usersEnqueued).toBe(0);
      expect(again.rowsSkippedUnchanged).toBe(again.rowsRead);
    } finally {
      await crash.stop();
    }
  }, 150_000);

  it('a shard processed twice — two copies at once, a copy after it is done, and a redo after its owner died unrecorded — sends each profile once', async () => {
    stack = await startTestStack({ env: { PROFILES_PER_SHARD: '500', ENQUEUE_LEASE_MS: '1000' } });
    const deps = stack.app.deps;
    for (const host of stack.app.hosts) await host.stop();
    const profiles = makeProfiles(1, 3000);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const runId = await startRun(deps);
    await startReading(deps, runId);
    let run = (await deps.runs.get(runId))!;
    expect(run.shards).toBeGreaterThanOrEqual(4);
    for (let p = 0; p < 4; p++) expect(await runStep(deps, runId, 'map', p)).toEqual({ kind: 'done' });

    // Two copies of shard 0's message at once: one works, the other waits or finds it done.
    const copies = await Promise.all([runStep(deps, runId, 'shard', 0), runStep(deps, runId, 'shard', 0)]);
    expect(copies.filter((c) => c.kind === 'done').length).toBeGreaterThanOrEqual(1);
    const shard0 = (await deps.units.read(runId, 'shard', 0))!;
    expect(shard0.state).toBe('done');
    expect(await batchQueueLength(deps)).toBe(shard0.totals!.batchesEnqueued);
    // A copy after it is done adds nothing.
    expect(await runStep(deps, runId, 'shard', 0)).toEqual({ kind: 'done' });
    expect(await batchQueueLength(deps)).toBe(shard0.totals!.batchesEnqueued);

    // Shard 1 is worked through by an owner that dies before recording it done: its batches are on the queue.
    const maps = await deps.units.list(runId, 'map');
    const mapOwners = new Map(maps.map((u) => [u.index, u.owner]));
    expect((await deps.units.claim(runId, 'shard', 1, 'deadowner001', 300)).kind).toBe('claimed');
    const previous = await readPreviousState(deps.storage.stateContainer, await deps.destinations.statePointer(run.modelJsonPath));
    const deadTotals = await diffShard(deps, run, 1, 'deadowner001', mapOwners, previous, undefined, new AbortController().signal);
    expect(deadTotals.batchesEnqueued).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 400));
    // Its message comes back: a new owner takes the step over and enqueues the same batches again.
    expect(await runStep(deps, runId, 'shard', 1)).toEqual({ kind: 'done' });
    const shard1 = (await deps.units.read(runId, 'shard', 1))!;
    expect(shard1.owner).not.toBe('deadowner001');
    expect(shard1.totals).toEqual({
      ...deadTotals,
      stateBlob: expect.not.stringContaining('deadowner001'),
      workSeconds: expect.any(Number),
      endedAt: expect.any(String),
    });
    expect(await batchQueueLength(deps)).toBe(shard0.totals!.batchesEnqueued + 2 * shard1.totals!.batchesEnqueued);

    for (let s = 2; s < run.shards; s++) expect(await runStep(deps, runId, 'shard', s)).toEqual({ kind: 'done' });
    run = (await deps.runs.get(runId))!;
    expect(run.enqueueDone).toBe(true);
    expect(run.usersEnqueued).toBe(profiles.size);
    for (const host of stack.app.hosts) host.start();
    [run] = await stack.app.waitForRuns([runId], { timeoutMs: 90_000 });
    expect(run.status).toBe('completed');
    expect(run.usersDelivered).toBe(profiles.size);
    expectExactCounts(run);
    // The second copy of each batch found it settled: Braze took every profile exactly once.
    expect(stack.braze.stats.objectsApplied).toBe(profiles.size);
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
    // The state is the live owner's, and whole: the same refresh again sends nothing.
    const manifestName = (await deps.destinations.statePointer(run.modelJsonPath))!.blobName;
    const manifest = stateManifestSchema.parse(JSON.parse((await deps.storage.stateContainer.getBlobClient(manifestName).downloadToBuffer()).toString('utf8')));
    expect(manifest.blobs[1]).toBe(shard1.totals!.stateBlob);
    expect(manifest.profiles).toBe(profiles.size);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/29/0600', 2);
    const [again] = await stack.app.waitForRuns([await startRun(deps)], { timeoutMs: 90_000 });
    expect(again.usersEnqueued).toBe(0);
    expect(again.rowsSkippedUnchanged).toBe(again.rowsRead);
  }, 120_000);

  it('a partition of one segment whose map step comes late: the shard steps wait for it, and a profile in both segments is still one object', async () => {
    stack = await startTestStack({ env: { PROFILES_PER_SHARD: '500' } });
    const deps = stack.app.deps;
    await stack.app.hosts[0].stop();
    const profiles = makeProfiles(1, 3000);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const runId = await startRun(deps);
    await startReading(deps, runId);
    const run = (await deps.runs.get(runId))!;
    // Partitions 0–1 are HighValue's, 2–3 Newsletter's; Newsletter's second one is late.
    for (const p of [0, 1, 2]) expect(await runStep(deps, runId, 'map', p)).toEqual({ kind: 'done' });
    // Shard messages that arrive early (a duplicate, an impatient retry) wait and do nothing.
    for (let s = 0; s < run.shards; s++) {
      const early = await runStep(deps, runId, 'shard', s);
      expect(early).toMatchObject({ kind: 'deferred', reason: expect.stringContaining('waits for the reading of every partition') });
    }
    expect(await deps.units.list(runId, 'shard')).toEqual([]);
    expect(await batchQueueLength(deps)).toBe(0);
    expect(stack.braze.stats.requests).toBe(0);

    // The late partition's step, then whatever the queue holds.
    expect(await runStep(deps, runId, 'map', 3)).toEqual({ kind: 'done' });
    stack.app.hosts[0].start();
    const [done] = await stack.app.waitForRuns([runId], { timeoutMs: 90_000 });
    expect(done.status).toBe('completed');
    expectExactCounts(done);
    const inBoth = [...profiles.values()].filter((p) => p.segments.size === 2);
    expect(inBoth.length).toBeGreaterThan(500);
    expect(done.usersDelivered).toBe(profiles.size);
    expect(stack.braze.stats.objectsApplied).toBe(profiles.size);
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
    expect(stack.braze.profile(`external_id:${customerId(2)}`)).toMatchObject({ ci_high_value: true, ci_newsletter: true });
  }, 120_000);

  it('reads a delivered state written by an older version for its members, sends everything in full once, and says so', async () => {
    stack = await startTestStack({ env: { PROFILES_PER_SHARD: '500' } });
    const deps = stack.app.deps;
    const first = makeProfiles(1, 2000);
    await writeRefresh(deps.storage.exportContainer, first.values(), '2026/11/27/0600', 2);
    let [run]: RunRecord[] = await stack.app.waitForRuns([await startRun(deps)], { timeoutMs: 90_000 });
    expect(run.status).toBe('completed');

    // Rewrite the state as the older version kept it: one blob, fingerprints of mapped values, a pointer without a format.
    const pointer = (await deps.destinations.statePointer(run.modelJsonPath))!;
    const manifest = stateManifestSchema.parse(
      JSON.parse((await deps.storage.stateContainer.getBlobClient(pointer.blobName).downloadToBuffer()).toString('utf8')),
    );
    const lines: string[] = [];
    for (const blob of manifest.blobs)
      for await (const record of readNdjson(deps.storage.stateContainer, blob, stateRecordSchema, isStateRecord, true))
        lines.push(stateLine({ ...record, f: record.f.split('').reverse().join('') }));
    const legacyName = `state/legacy-${run.runId}.ndjson`;
    const text = lines.join('\n') + '\n';
    await deps.storage.stateContainer.getBlockBlobClient(legacyName).upload(text, Buffer.byteLength(text));
    await deps.storage.runsTable.updateEntity(
      {
        partitionKey: 'delivered-state',
        rowKey: destinationKey(run.modelJsonPath),
        blobName: legacyName,
        runId: pointer.runId,
        runCreatedAt: pointer.runCreatedAt,
        profiles: pointer.profiles,
      },
      'Replace',
    );
    expect((await deps.destinations.statePointer(run.modelJsonPath))?.format).toBeUndefined();

    // The next refresh drops 100 profiles: they are cleared (the old state still knows them), and everyone else is sent in full.
    const second = makeProfiles(101, 2000);
    await writeRefresh(deps.storage.exportContainer, second.values(), '2026/11/28/0600', 2);
    const appliedBefore = stack.braze.stats.objectsApplied;
    [run] = await stack.app.waitForRuns([await startRun(deps)], { timeoutMs: 90_000 });
    expect(run.status).toBe('completed');
    expect(run.stateFallback).toBe(true);
    expect(runSummary(run).note).toMatch(/older version: every profile was sent in full/);
    expect(run.usersEnqueued).toBe(second.size + 100);
    expect(run.exitsEnqueued).toBe(100);
    expect(run.rowsSkippedUnchanged).toBe(0);
    expect(stack.braze.stats.objectsApplied - appliedBefore).toBe(second.size + 100);
    expect(brazeMismatches(stack.braze, expectedBraze([first, second]))).toEqual([]);
    expect(stack.log.lines.some((l) => l.includes(`run ${run.runId}:`) && l.includes('older format'))).toBe(true);

    // The state it wrote is the current format: the same refresh again is incremental.
    expect((await deps.destinations.statePointer(run.modelJsonPath))?.format).toBe(2);
    await writeRefresh(deps.storage.exportContainer, second.values(), '2026/11/29/0600', 2);
    [run] = await stack.app.waitForRuns([await startRun(deps)], { timeoutMs: 90_000 });
    expect(run.stateFallback).toBe(false);
    expect(runSummary(run).note).toBeUndefined();
    expect(run.usersEnqueued).toBe(0);
  }, 120_000);
});
