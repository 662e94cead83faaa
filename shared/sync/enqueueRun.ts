import { describeError, ExportNotReadyError, InvalidInputError } from '../errors';
import { guardEnabled } from '../config/syncConfig';
import { diffShard } from '../reader/diffShard';
import { mapPartition } from '../reader/mapPartition';
import { encodeMessage } from '../queue/messages';
import { deleteWorkingBlobs, driftReportName, mapPartName, newToken, previewReportName, shardPartName } from '../runs/runBlobs';
import { addDrift, type DriftTally } from '../reconcile/drift';
import { composeRejectsReport } from '../runs/rejectsReport';
import { addPreviews, type PreviewTally } from '../reader/preview';
import type { RunCounts } from '../runs/runRecord';
import type { BatchOutcome } from '../runs/runTable';
import { isTerminal, statusAfter, type RunRecord } from '../runs/runRecord';
import type { UnitKind, UnitRecord, UnitTotals } from '../runs/unitLedger';
import { deleteStateFolder, readPreviousState, shardCountFor, type UncertainRun } from '../state/deliveredState';
import { claimDestination, wakeWaiting } from './claimDestination';
import { guardVerdict, type RunChange } from './massChangeGuard';
import { releaseStaged } from './heldRuns';
import { runStateBase, stateBaseProfiles, stateBaseText } from './stateBase';
import { reconcileShard } from '../reconcile/reconcileShard';
import { awaitSegmentExport, readSegmentExport, type ExportReadiness } from '../reconcile/segmentExport';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from './deps';
import { finalizeRun, requestFinalizeIfComplete } from './finalizeRun';
import { holdingUnit } from './lease';
import { partitionList, readSources, runDestination } from './runSources';

export type RunStepResult =
  { kind: 'done' } | { kind: 'deferred'; delayMs: number; reason: string; /** A waiting run's look, carried by its next message. */ lookAt?: number };

/** Rows a CSV byte holds on average in CI exports, for sizing a first run that has no state to go by. */
const BYTES_PER_PROFILE_ESTIMATE = 150;

/**
 * Reading a refresh, spread over instances. `startRun` plans it — how many shards, from the
 * previous state's size or the partitions' bytes — and sends one map step per partition (each
 * reads its partition once and routes rows to shards); once every map step is done, one diff
 * step per shard (each diffs its slice against its slice of the state and enqueues batches);
 * once every shard is done, the run's totals are the sum of its units and the run sends.
 * Every step is a unit with a record: claimed before it works, done once, its blobs named by
 * its owner. `startRun` is also how a run whose messages were lost gets going again: it sends
 * whatever steps are not done.
 */
export async function enqueueRun(deps: ConnectorDeps, runId: string, lookAt?: number): Promise<RunStepResult> {
  let run = await deps.runs.get(runId);
  if (!run) {
    deps.log.warn(`run ${runId} does not exist; message dropped`);
    return { kind: 'done' };
  }
  if (isTerminal(run.status) || run.status === 'finalizing' || run.enqueueDone) return { kind: 'done' };
  // Wakes, sweeps and triggers each send a start: of the copies a waiting run has, the one that
  // looked last keeps looking; the others stop, instead of multiplying while it waits for days.
  if (lookAt !== undefined && run.status === 'queued' && run.lookedAt !== undefined && Date.parse(run.lookedAt) > lookAt) return { kind: 'done' };
  // A preview changes nothing of the destination: it neither waits for nor holds its lock.
  if (!run.dryRun) {
    const claim = await claimDestination(deps, run);
    if (claim.kind === 'wait') {
      const now = deps.clock.now();
      // Looking is progress: the sweep restarts only a run nothing happens to.
      await deps.runs.update(runId, (current) => (current.status === 'queued' ? { lookedAt: new Date(now).toISOString() } : undefined));
      return { kind: 'deferred', delayMs: claim.delayMs, reason: claim.reason, lookAt: now };
    }
    if (claim.kind === 'superseded') return { kind: 'done' };
    run = claim.run;
  }
  if (run.shards === 0) {
    // The state is read once, here: every shard diffs against this one, whatever moves meanwhile.
    const pointer = await deps.destinations.statePointer(run.modelJsonPath);
    const previous = await readPreviousState(deps.storage.stateContainer, pointer);
    const segments = await readSources(deps, run);
    const bytes = segments.reduce((n, s) => n + s.partitions.reduce((m, p) => m + p.sizeBytes, 0), 0);
    const estimate =
      previous.format === 2 ? previous.manifest.profiles : previous.format === 1 ? previous.profiles : Math.ceil(bytes / BYTES_PER_PROFILE_ESTIMATE);
    const shards = shardCountFor(estimate, previous, deps.settings.profilesPerShard);
    // Its batches wait until the run is within the guard: only then can it be held with nothing sent.
    // A first sync (nothing delivered yet) is never held; a reconcile guards the members Braze holds.
    const staged = !run.dryRun && guardEnabled(runDestination(deps, run).guard) && (previous.format !== 0 || run.reconcile);
    ({ run } = await deps.runs.update(runId, (current) =>
      current.shards === 0 && current.status === 'queued' ? { shards, stateBase: stateBaseText(pointer), staged, event: 'startEnqueue' } : undefined,
    ));
    // Superseded while it planned (a newer refresh took over before it started): nothing to read.
    if (isTerminal(run.status)) return { kind: 'done' };
    deps.log.info(`run ${runId}: ${partitionList(segments).length} partitions into ${run.shards} shards`);
  }
  await advance(deps, run);
  return { kind: 'done' };
}

/** Sends the steps that are not done yet: the map steps, or, once they all are, the shard steps; or ends the enqueue. */
async function advance(deps: ConnectorDeps, run: RunRecord): Promise<void> {
  const segments = await readSources(deps, run);
  const partitions = partitionList(segments).length;
  const maps = doneIndexes(await deps.units.list(run.runId, 'map'));
  const exports = run.reconcile ? doneIndexes(await deps.units.list(run.runId, 'export')) : new Set<number>();
  const exportCount = run.reconcile ? segments.length : 0;
  if (maps.size < partitions || exports.size < exportCount) {
    for (let p = 0; p < partitions; p++)
      if (!maps.has(p)) await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'mapPartition', runId: run.runId, partition: p }));
    for (let g = 0; g < exportCount; g++)
      if (!exports.has(g)) await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'exportSegment', runId: run.runId, segment: g }));
    return;
  }
  const shards = doneIndexes(await deps.units.list(run.runId, 'shard'));
  if (shards.size < run.shards) {
    for (let s = 0; s < run.shards; s++)
      if (!shards.has(s)) await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'diffShard', runId: run.runId, shard: s }));
    return;
  }
  await completeEnqueue(deps, run);
}

function doneIndexes(units: UnitRecord[]): Set<number> {
  return new Set(units.filter((u) => u.state === 'done').map((u) => u.index));
}

/** A map or shard step, from its queue message. */
export async function runUnit(deps: ConnectorDeps, runId: string, kind: UnitKind, index: number): Promise<RunStepResult> {
  const run = await deps.runs.get(runId);
  if (!run || isTerminal(run.status) || run.status === 'finalizing' || run.enqueueDone) return { kind: 'done' };
  let inputs: StepInputs = {};
  if (kind === 'shard') {
    const segments = await readSources(deps, run);
    const maps = await deps.units.list(runId, 'map');
    const exports = run.reconcile ? await deps.units.list(runId, 'export') : [];
    if (doneIndexes(maps).size < partitionList(segments).length)
      return { kind: 'deferred', delayMs: 5_000, reason: `run ${runId}: shard ${index} waits for its map steps` };
    if (run.reconcile && doneIndexes(exports).size < segments.length)
      return { kind: 'deferred', delayMs: 5_000, reason: `run ${runId}: shard ${index} waits for Braze's segment exports` };
    inputs = {
      mapOwners: new Map(maps.map((u) => [u.index, u.owner])),
      exportOwners: new Map(exports.map((u) => [u.index, u.owner])),
      fallbackKeyed: maps.some((u) => (u.totals?.rowsKeyedByFallback ?? 0) > 0),
    };
  }
  if (kind === 'export') {
    // Waiting for Braze holds no slot and no claim: the step comes back when the archive may be there.
    if (doneIndexes(await deps.units.list(runId, 'export')).has(index)) {
      await advance(deps, run);
      return { kind: 'done' };
    }
    let readiness: ExportReadiness;
    try {
      readiness = await awaitSegmentExport(deps, run, index);
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error;
      await failRun(deps, run, error);
      return { kind: 'done' };
    }
    if (readiness.kind === 'wait') {
      // Waiting for Braze is progress: the sweep must not take the run for one a crash left behind and start it again.
      await deps.runs.update(runId, (current) => (isTerminal(current.status) ? undefined : {}));
      return { kind: 'deferred', delayMs: readiness.delayMs, reason: `run ${runId}: ${readiness.reason}` };
    }
    inputs = { exportUrl: readiness.url };
  }
  const release = await deps.readerSlots.take();
  if (!release) return { kind: 'deferred', delayMs: 500 + Math.floor(Math.random() * 1_000), reason: `run ${runId}: this instance is reading another step` };
  try {
    return await claimAndRun(deps, run, kind, index, inputs);
  } finally {
    release();
  }
}

/** What a step reads besides its own source: the owners of the map and export outputs (shards), or the archive's URL (exports). */
interface StepInputs {
  mapOwners?: Map<number, string>;
  exportOwners?: Map<number, string>;
  fallbackKeyed?: boolean;
  exportUrl?: string;
}

async function claimAndRun(deps: ConnectorDeps, run: RunRecord, kind: UnitKind, index: number, inputs: StepInputs): Promise<RunStepResult> {
  const runId = run.runId;
  const owner = newToken();
  const holdMs = deps.settings.enqueueLeaseMs;
  const claim = await deps.units.claim(runId, kind, index, owner, holdMs);
  if (claim.kind === 'busy')
    return { kind: 'deferred', delayMs: claim.untilMs - deps.clock.now() + 1_000, reason: `run ${runId}: ${kind} ${index} is being worked on` };
  if (claim.kind === 'done') {
    await advance(deps, run);
    return { kind: 'done' };
  }
  let totals: UnitTotals;
  try {
    totals = await holdingUnit(deps, runId, kind, index, owner, async (signal) => {
      if (kind === 'map') return mapPartition(deps, run, index, owner, signal);
      if (kind === 'export') return readSegmentExport(deps, run, index, inputs.exportUrl!, owner, signal);
      const previous = await runStateBase(deps, run);
      if (run.reconcile)
        return reconcileShard(deps, run, index, owner, inputs.mapOwners!, inputs.exportOwners!, inputs.fallbackKeyed ?? false, previous, signal);
      return diffShard(deps, run, index, owner, inputs.mapOwners!, previous, await uncertainRunOf(deps, run), signal);
    });
  } catch (error) {
    if (error instanceof InvalidInputError || error instanceof ExportNotReadyError) {
      await failRun(deps, run, error);
      return { kind: 'done' };
    }
    throw error;
  }
  if (!(await deps.units.finish(runId, kind, index, owner, totals))) {
    deps.log.warn(`run ${runId}: ${kind} ${index} was taken over while it worked; the other owner's result counts`);
    return { kind: 'done' };
  }
  if (kind === 'shard') {
    // A diff step's end is progress: the sweep restarts only a run nothing happens to.
    await deps.runs.update(runId, (current) => (isTerminal(current.status) || current.enqueueDone ? undefined : {}));
  } else {
    const segments = await readSources(deps, run);
    const maps = await deps.units.list(runId, 'map');
    // How far the reading is, for the status API (and progress, for the sweep).
    const rowsRead = maps.reduce((n, u) => n + (u.totals?.rowsRead ?? 0), 0);
    await deps.runs.update(runId, (current) =>
      isTerminal(current.status) || current.enqueueDone ? undefined : kind === 'map' && current.rowsReadSoFar < rowsRead ? { rowsReadSoFar: rowsRead } : {},
    );
    // Only the step that finds every other one of the first phase done moves the run on.
    if (doneIndexes(maps).size < partitionList(segments).length) return { kind: 'done' };
    if (run.reconcile && doneIndexes(await deps.units.list(runId, 'export')).size < segments.length) return { kind: 'done' };
  }
  await advance(deps, run);
  return { kind: 'done' };
}

/** The superseded run whose possibly delivered profiles this run re-sends in full, with what its shards left. */
async function uncertainRunOf(deps: ConnectorDeps, run: RunRecord): Promise<UncertainRun | undefined> {
  if (!run.takesOver) return undefined;
  const uncertain = await deps.runs.get(run.takesOver);
  if (!uncertain) throw new Error(`run ${run.runId}: run ${run.takesOver}, whose deliveries it must re-send, has no record`);
  const shardOutputs = (await deps.units.list(uncertain.runId, 'shard'))
    .filter((u) => u.state === 'done')
    .map((u) => ({ index: u.index, owner: u.owner, stateBlob: u.totals?.stateBlob }));
  return { runId: uncertain.runId, shards: uncertain.shards, shardOutputs };
}

/** The counts a run's totals sum over its units. */
type SummedCount =
  'rowsRead' | 'rowsRejectedInput' | 'rowsSkippedUnchanged' | 'rowsEnqueued' | 'usersEnqueued' | 'exitsEnqueued' | 'batchesEnqueued' | 'dataPointsFullSend';

/** Every shard is done: the run's totals are the sum of its units, and it sends. */
async function completeEnqueue(deps: ConnectorDeps, planned: RunRecord): Promise<void> {
  const runId = planned.runId;
  const units = [...(await deps.units.list(runId, 'map')), ...(await deps.units.list(runId, 'shard'))];
  const drift = planned.reconcile ? await driftSummary(deps, planned, units) : undefined;
  const sum = (name: SummedCount) => units.reduce((n, u) => n + (u.totals?.[name] ?? 0), 0);
  const reasons: Record<string, number> = {};
  for (const unit of units) for (const [reason, n] of Object.entries(unit.totals?.rejectedByReason ?? {})) reasons[reason] = (reasons[reason] ?? 0) + n;
  const stateFallback = units.some((u) => u.totals?.stateFallback);
  const totals = {
    rowsRead: sum('rowsRead'),
    rowsRejectedInput: sum('rowsRejectedInput'),
    rowsSkippedUnchanged: sum('rowsSkippedUnchanged'),
    rowsEnqueued: sum('rowsEnqueued'),
    usersEnqueued: sum('usersEnqueued'),
    exitsEnqueued: sum('exitsEnqueued'),
    batchesEnqueued: sum('batchesEnqueued'),
    dataPointsFullSend: sum('dataPointsFullSend'),
  };
  if (planned.dryRun) {
    await completePreview(deps, runId, totals, reasons, units, drift);
    return;
  }
  if (planned.staged && !(await passGuard(deps, planned, totals, reasons, units, drift))) return;
  const { run, changed } = await deps.runs.update(runId, (current) =>
    current.enqueueDone
      ? undefined
      : {
          ...totals,
          rowsReadSoFar: totals.rowsRead,
          inputRejectedByReason: JSON.stringify(reasons),
          stateFallback,
          drift: drift && JSON.stringify(drift),
          enqueueDone: true,
          event: 'enqueueDone',
        },
  );
  if (!changed) return;
  if (drift) reportDrift(deps, run, drift);
  deps.log.info(
    `run ${runId}: read ${totals.rowsRead} rows; ${totals.usersEnqueued} profiles to send (${totals.exitsEnqueued} leaving), ${totals.rowsSkippedUnchanged} rows unchanged, ${totals.rowsRejectedInput} rejected; ${totals.batchesEnqueued} batches from ${run.shards} shards${stateFallback ? '; the delivered state was of an older format: everything was sent in full' : ''}`,
  );
  deps.log.record({
    connectorEvent: 'RunEnqueued',
    runId,
    destination: run.destination,
    rowsRead: totals.rowsRead,
    rowsUnchanged: totals.rowsSkippedUnchanged,
    rowsRejected: totals.rowsRejectedInput,
    profilesEnqueued: totals.usersEnqueued,
    exits: totals.exitsEnqueued,
    batches: totals.batchesEnqueued,
    durationMs: deps.clock.now() - Date.parse(run.createdAt),
  });
  // The last batch may have been recorded before enqueueDone was set: whoever writes last asks.
  if (totals.usersEnqueued === 0) await finalizeRun(deps, runId);
  else await requestFinalizeIfComplete(deps, runId);
}

/** A run's preview as GET /api/runs/{id}/preview serves it: what it changes in Braze and what that costs. */
async function writePreviewReport(
  deps: ConnectorDeps,
  run: RunRecord,
  totals: Omit<RunCounts, keyof BatchOutcome>,
  reasons: Record<string, number>,
  preview: PreviewTally,
  rejectsReport: string | undefined,
  held?: string[],
): Promise<void> {
  const text = JSON.stringify(
    {
      runId: run.runId,
      destination: run.destination,
      instance: run.instance,
      refresh: run.refreshLabel,
      force: run.force,
      ...(held ? { held } : {}),
      rows: { read: totals.rowsRead, unchanged: totals.rowsSkippedUnchanged, wouldSend: totals.rowsEnqueued, rejected: totals.rowsRejectedInput },
      rejectedByReason: reasons,
      ...(rejectsReport ? { rejectsReport } : {}),
      profiles: { wouldSend: totals.usersEnqueued, leaving: totals.exitsEnqueued },
      brazeRequests: preview.requests,
      dataPoints: preview.dataPoints,
      dataPointsFullSend: totals.dataPointsFullSend,
      segments: preview.segments,
      attributes: preview.attributes,
      sample: preview.sample,
    },
    null,
    2,
  );
  await deps.storage.stateContainer.getBlockBlobClient(previewReportName(run.runId)).upload(text, Buffer.byteLength(text), {
    blobHTTPHeaders: { blobContentType: 'application/json' },
  });
}

/**
 * A guarded run has diffed every shard, its batches staged: it sends them if it stays within the
 * destination's guard (or a person approved it), else it is held with its preview and waits.
 * Answers whether it may go on to send.
 */
async function passGuard(
  deps: ConnectorDeps,
  planned: RunRecord,
  totals: Omit<RunCounts, keyof BatchOutcome>,
  reasons: Record<string, number>,
  units: UnitRecord[],
  drift: DriftSummary | undefined,
): Promise<boolean> {
  const run = await deps.runs.get(planned.runId);
  // Held, it waits for a person. A run that began releasing its batches and then halted (a sender
  // met a 401) or was resumed finishes releasing them: its guard was passed.
  if (!run || run.enqueueDone || run.status === 'held' || isTerminal(run.status) || run.status === 'finalizing') return false;
  const preview = addPreviews(units.flatMap((u) => (u.totals?.preview ? [u.totals.preview] : [])));
  if (!run.approved && run.status === 'enqueuing') {
    const change: RunChange = drift
      ? {
          segments: Object.fromEntries(
            Object.entries(drift.segments).map(([name, d]) => [name, { members: drift.usersExported[name] ?? 0, cleared: d.stray }]),
          ),
          profilesSent: drift.profiles,
          profilesBefore: stateBaseProfiles(run),
          force: run.force,
        }
      : {
          segments: Object.fromEntries(
            Object.entries(preview.segments).map(([name, s]) => [name, { members: s.leavers + s.changed + s.unchanged, cleared: s.leavers }]),
          ),
          profilesSent: totals.usersEnqueued,
          profilesBefore: stateBaseProfiles(run),
          force: run.force,
        };
    const held = guardVerdict(runDestination(deps, run).guard, change);
    if (held.length > 0) {
      if (!drift) await writePreviewReport(deps, run, totals, reasons, preview, undefined, held);
      await holdRun(deps, run, totals, reasons, units, drift, held);
      return false;
    }
  }
  if (!drift) await writePreviewReport(deps, run, totals, reasons, preview, undefined);
  let released: number;
  try {
    released = await releaseStaged(
      deps,
      run,
      units.filter((u) => u.kind === 'shard'),
    );
  } catch (error) {
    if (!(error instanceof InvalidInputError)) throw error;
    await failRun(deps, run, error);
    return false;
  }
  deps.log.info(`run ${run.runId}: ${released} staged batches released${run.approved ? ' (approved)' : ' (within the guard)'}`);
  return true;
}

async function holdRun(
  deps: ConnectorDeps,
  run: RunRecord,
  totals: Omit<RunCounts, keyof BatchOutcome>,
  reasons: Record<string, number>,
  units: UnitRecord[],
  drift: DriftSummary | undefined,
  held: string[],
): Promise<void> {
  const heldReason = held.join('; ');
  const { changed } = await deps.runs.update(run.runId, (current) =>
    statusAfter(current.status, 'hold')
      ? {
          ...totals,
          rowsReadSoFar: totals.rowsRead,
          inputRejectedByReason: JSON.stringify(reasons),
          stateFallback: units.some((u) => u.totals?.stateFallback),
          drift: drift && JSON.stringify(drift),
          heldReason,
          event: 'hold',
        }
      : undefined,
  );
  if (!changed) return;
  // A newer refresh waiting for the destination may take over from a held run now.
  await wakeWaiting(deps, run.modelJsonPath);
  deps.log.warn(
    `run ${run.runId} held: ${heldReason}. Nothing was sent. See GET /api/runs/${run.runId}/preview, then POST /api/runs/${run.runId}/approve to send exactly that, or POST /api/runs/${run.runId}/cancel`,
  );
  deps.log.record({
    connectorEvent: 'RunHeld',
    runId: run.runId,
    destination: run.destination,
    reason: heldReason,
    profilesWouldSend: totals.usersEnqueued,
    exits: totals.exitsEnqueued,
  });
}

/**
 * A dry run has diffed every shard: its preview (the shards' findings summed, with the input
 * rejects) and its rejects report are written, and it ends without sending anything.
 */
async function completePreview(
  deps: ConnectorDeps,
  runId: string,
  totals: Omit<RunCounts, keyof BatchOutcome>,
  reasons: Record<string, number>,
  units: UnitRecord[],
  drift: DriftSummary | undefined,
): Promise<void> {
  const run = await deps.runs.get(runId);
  if (!run || run.enqueueDone) return;
  const preview = addPreviews(units.flatMap((u) => (u.totals?.preview ? [u.totals.preview] : [])));
  const owners = new Map<string, string>();
  for (const unit of units) owners.set(unit.kind === 'map' ? mapPartName(unit.index) : shardPartName(unit.index), unit.owner);
  const report = await composeRejectsReport(deps.storage.stateContainer, runId, owners);
  // A dry-run reconcile's report is its drift report (written already): it has no preview.
  if (!drift) await writePreviewReport(deps, run, totals, reasons, preview, report.blobName);
  const { changed } = await deps.runs.update(runId, (current) =>
    current.enqueueDone
      ? undefined
      : {
          ...totals,
          rowsReadSoFar: totals.rowsRead,
          inputRejectedByReason: JSON.stringify(reasons),
          drift: drift && JSON.stringify(drift),
          enqueueDone: true,
          finishedAt: new Date(deps.clock.now()).toISOString(),
          event: 'previewDone',
        },
  );
  if (!changed) return;
  await deleteWorkingBlobs(deps.storage.stateContainer, runId);
  if (drift) {
    reportDrift(deps, run, drift);
    return;
  }
  deps.log.info(
    `run ${runId} (dry run) previewed: ${totals.usersEnqueued} profiles would be sent (${totals.exitsEnqueued} leaving) in ${preview.requests} requests, ${preview.dataPoints} data points; ${totals.rowsSkippedUnchanged} rows unchanged, ${totals.rowsRejectedInput} rejected; nothing was sent`,
  );
  deps.log.record({
    connectorEvent: 'RunPreviewed',
    runId,
    destination: run.destination,
    rowsRead: totals.rowsRead,
    profilesWouldSend: totals.usersEnqueued,
    exits: totals.exitsEnqueued,
    brazeRequests: preview.requests,
    dataPoints: preview.dataPoints,
  });
}

/** A reconcile's findings: the shards' drift summed, with what Braze's exports held. */
export type DriftSummary = DriftTally & { usersExported: Record<string, number>; usersUnmatched: number };

async function driftSummary(deps: ConnectorDeps, run: RunRecord, units: UnitRecord[]): Promise<DriftSummary> {
  const runId = run.runId;
  const segments = await readSources(deps, run);
  const exports = await deps.units.list(runId, 'export');
  const usersExported: Record<string, number> = {};
  for (const unit of exports) usersExported[segments[unit.index].attribute] = unit.totals?.usersExported ?? 0;
  const summary = { ...addDrift(units.flatMap((u) => (u.totals?.drift ? [u.totals.drift] : []))), usersExported, usersUnmatched: 0 };
  summary.usersUnmatched = exports.reduce((n, u) => n + (u.totals?.usersUnmatched ?? 0), 0);
  const text = JSON.stringify(
    { runId, destination: run.destination, instance: run.instance, refresh: run.refreshLabel, dryRun: run.dryRun, ...summary },
    null,
    2,
  );
  await deps.storage.stateContainer.getBlockBlobClient(driftReportName(runId)).upload(text, Buffer.byteLength(text), {
    blobHTTPHeaders: { blobContentType: 'application/json' },
  });
  return summary;
}

function reportDrift(deps: ConnectorDeps, run: RunRecord, drift: DriftSummary): void {
  const sum = (key: 'missing' | 'stray' | 'unresolved') => Object.values(drift.segments).reduce((n, s) => n + s[key], 0);
  const stale = Object.values(drift.staleValues).reduce((n, v) => n + v, 0);
  deps.log.info(
    `run ${run.runId} reconciled with Braze: ${sum('missing')} memberships missing in Braze, ${sum('stray')} stray members (${sum('unresolved')} more left alone: CI may list them under another key), ${stale} stale values; ${drift.profiles} profiles ${run.dryRun ? 'would be repaired (dry run: nothing sent)' : 'to repair'} in ${drift.requests} requests${drift.usersUnmatched ? `; ${drift.usersUnmatched} exported users had no identifier the matching rules use (not checked)` : ''}`,
  );
  deps.log.record({
    connectorEvent: 'RunReconciled',
    runId: run.runId,
    destination: run.destination,
    dryRun: run.dryRun,
    missing: sum('missing'),
    stray: sum('stray'),
    unresolved: sum('unresolved'),
    staleValues: stale,
    profilesToRepair: drift.profiles,
    usersUnmatched: drift.usersUnmatched,
  });
}

async function failRun(deps: ConnectorDeps, run: RunRecord, error: InvalidInputError | ExportNotReadyError): Promise<void> {
  deps.log.error(`run ${run.runId} failed: ${describeError(error)}`);
  const failed = await deps.runs.update(run.runId, (current) =>
    statusAfter(current.status, 'fail') ? { event: 'fail', error: error.message, finishedAt: new Date(deps.clock.now()).toISOString() } : undefined,
  );
  if (!failed.changed) return;
  deps.log.record({ connectorEvent: 'RunFailed', runId: run.runId, destination: run.destination, reason: error.message });
  await deps.destinations.release(run.modelJsonPath, run.runId);
  await deleteWorkingBlobs(deps.storage.stateContainer, run.runId);
  await deleteStateFolder(deps.storage.stateContainer, run.modelJsonPath, run.runId);
  await wakeWaiting(deps, run.modelJsonPath);
}
