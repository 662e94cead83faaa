import { encodeMessage } from '../queue/messages';
import { composeRejectsReport } from '../runs/rejectsReport';
import { deleteWorkingBlobs, mapPartName, newToken, sentBlobName, shardPartName } from '../runs/runBlobs';
import { isTerminal, refreshTimeOf, statusAfter, type RunRecord } from '../runs/runRecord';
import type { UnitRecord } from '../runs/unitLedger';
import {
  loadUndelivered,
  manifestBlobName,
  restoreUndelivered,
  shardOfHash,
  shardStateBlobName,
  deleteStateFolder,
  STATE_FORMAT,
  type StateManifest,
} from '../state/deliveredState';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { holdingLease, leaseEnd, leaseHeld } from './lease';
import { stateStillRead } from './stateBase';
import { deleteRunBlobs, wakeWaiting } from './claimDestination';
import { announceOwed, owe, sendOwedNotices } from './notify';
import type { ConnectorRecord } from '../telemetry';

/** Profiles with an ending: delivered, rejected or failed (parked ones wait for a resume). */
function endedUsers(run: RunRecord): number {
  return run.usersDelivered + run.usersRejected + run.usersFailed;
}

/**
 * Every profile the run enqueued has exactly one ending and none waits parked. Exact: counts above
 * what was enqueued mean a batch was counted twice, which must never pass for completion.
 */
export function isRunComplete(run: RunRecord): boolean {
  return run.enqueueDone && run.usersParked === 0 && endedUsers(run) === run.usersEnqueued;
}

/** Asks for the run's finalization once its last batch is recorded; the run queue retries it if it fails. */
export async function requestFinalizeIfComplete(deps: ConnectorDeps, runId: string): Promise<void> {
  const run = await deps.runs.get(runId);
  if (!run || !statusAfter(run.status, 'startFinalize')) return;
  if (run.enqueueDone && endedUsers(run) > run.usersEnqueued) {
    deps.log.error(`run ${runId}: ${endedUsers(run)} profiles counted for ${run.usersEnqueued} enqueued; not finalized`);
    return;
  }
  if (isRunComplete(run)) await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'finalizeRun', runId }));
}

/**
 * A copy of a reading message (a start, a step) that finds the run's reading ended: the worker that
 * ended it may have failed or died before the finalize it owed was on the queue, or inside the
 * finalizer it ran itself (a run with nothing to send). This copy is that message's retry, and the
 * only ask before the timer's sweep, so it asks again; a finalizer still at work keeps its lease,
 * and the request comes back when the lease ends.
 */
export async function finalizeIfReadingEnded(deps: ConnectorDeps, run: RunRecord): Promise<void> {
  if (!isTerminal(run.status) && isRunComplete(run)) await requestFinalizeIfComplete(deps, run.runId);
}

/**
 * The destination's new delivered state: each shard's state as its step wrote it, except in the
 * shards where Braze did not take everything — there the profiles it did not take get their
 * previous state back (they are sent again next refresh). A manifest lists the shards; the
 * pointer moves to it unless a newer run already wrote the state, and the state it replaces goes.
 */
async function writeDeliveredState(
  deps: ConnectorDeps,
  run: RunRecord,
  shardUnits: UnitRecord[],
  batchTokens: Map<string, string>,
  signal: AbortSignal,
): Promise<boolean> {
  const container = deps.storage.stateContainer;
  const undelivered = await loadUndelivered(container, run.runId, batchTokens);
  const byShard = new Map<number, Set<string>>();
  for (const hash of undelivered) {
    const shard = shardOfHash(hash, run.shards);
    byShard.set(shard, (byShard.get(shard) ?? new Set()).add(hash));
  }
  const blobs: string[] = [];
  let profiles = 0;
  let emailKeys = 0;
  for (const unit of shardUnits) {
    const stateBlob = unit.totals?.stateBlob;
    if (!stateBlob) throw new Error(`run ${run.runId}: shard ${unit.index} recorded no state`);
    const missed = byShard.get(unit.index);
    if (!missed) {
      blobs[unit.index] = stateBlob;
      profiles += unit.totals?.profiles ?? 0;
      emailKeys += unit.totals?.emailKeys ?? 0;
      continue;
    }
    const restored = shardStateBlobName(run.modelJsonPath, run.runId, unit.index, newToken());
    const kept = await restoreUndelivered(container, { stateBlob, sentBlob: sentBlobName(run.runId, unit.index, unit.owner) }, missed, restored, signal);
    profiles += kept.profiles;
    emailKeys += kept.emailKeys;
    blobs[unit.index] = restored;
  }
  signal.throwIfAborted();
  const guidKeys = shardUnits.length > 0 && shardUnits.every((unit) => unit.totals?.guidKeys === true);
  const membership = manifestMembership(shardUnits, byShard.size > 0);
  const manifest: StateManifest = {
    format: STATE_FORMAT,
    runId: run.runId,
    shards: run.shards,
    profiles,
    blobs,
    emailKeys,
    ...(guidKeys ? { guidKeys } : {}),
    ...(membership !== 'flags' ? { membership } : {}),
  };
  const manifestName = manifestBlobName(run.modelJsonPath, run.runId);
  const text = JSON.stringify(manifest);
  await container.getBlockBlobClient(manifestName).upload(text, Buffer.byteLength(text), { blobHTTPHeaders: { blobContentType: 'application/json' } });
  const switched = await deps.destinations.switchStatePointer(run.modelJsonPath, {
    blobName: manifestName,
    format: STATE_FORMAT,
    runId: run.runId,
    runCreatedAt: run.createdAt,
    profiles,
    refreshTime: refreshTimeOf(run) || undefined,
    refreshLabel: run.refreshLabel,
    generation: run.generation || undefined,
  });
  if (!switched.switched) {
    await deleteStateFolder(container, run.modelJsonPath, run.runId);
    deps.log.warn(`run ${run.runId}: a newer run already wrote the delivered state; keeping that one`);
    return false;
  }
  const previous = switched.previous;
  if (!previous || previous.runId === run.runId) return true;
  // A dry run may be diffing against the state just replaced: the sweep deletes it once none is.
  if (await stateStillRead(deps, run.modelJsonPath, previous.runId))
    deps.log.info(`run ${run.runId}: the replaced state of run ${previous.runId} is kept while a dry run reads it`);
  else if (previous.format === STATE_FORMAT) await deleteStateFolder(container, run.modelJsonPath, previous.runId);
  else await container.getBlobClient(previous.blobName).deleteIfExists();
  // The run that wrote the previous state can no longer be resumed: its working blobs go.
  await deleteWorkingBlobs(container, previous.runId, true);
  return true;
}

/**
 * The form the state's memberships are in Braze. A run that switched form and did not deliver every
 * profile leaves some in the old one: the state says the old form, so the next run writes every
 * profile anew (the delivered ones again, harmlessly). Shards that disagree (the config changed
 * under the run) are taken as flags, which the next run of a list rewrites likewise.
 */
function manifestMembership(shardUnits: { totals?: { membershipForm?: string; membershipFrom?: string } }[], undelivered: boolean): string {
  const forms = new Set(shardUnits.map((unit) => unit.totals?.membershipForm ?? 'flags'));
  const from = shardUnits.find((unit) => unit.totals?.membershipFrom)?.totals?.membershipFrom;
  if (from && undelivered) return from;
  return forms.size === 1 ? [...forms][0] : 'flags';
}

/**
 * Ends a run: the new delivered state (only what Braze accepted), the rejects report, the final
 * status. One finalizer holds the run at a time, renewing its lease; safe to repeat: the state
 * blob and the report are named by run and rewritten whole.
 */
export async function finalizeRun(deps: ConnectorDeps, runId: string): Promise<RunRecord | undefined> {
  const run = await deps.runs.get(runId);
  if (!run || !isRunComplete(run)) return run;
  const owner = newToken();
  const claim = await deps.runs.update(runId, (current) => {
    if (!statusAfter(current.status, 'startFinalize') || !isRunComplete(current)) return undefined;
    if (current.status === 'finalizing' && leaseHeld(current, deps.clock.now())) return undefined;
    return { event: 'startFinalize', leaseOwner: owner, leaseUntil: leaseEnd(deps) };
  });
  if (!claim.changed) {
    // A finalizer that died between completing the run and freeing the destination: its finalize comes
    // again, and sends what the completion owes (the sweep would, later) before it frees the destination.
    if (claim.run.status === 'completed' && (await deps.destinations.activeRun(run.modelJsonPath)) === runId) {
      await sendOwedNotices(deps, claim.run, deps.clock.now(), 0);
      await deps.destinations.release(run.modelJsonPath, runId);
      await wakeWaiting(deps, run.modelJsonPath);
    }
    return claim.run;
  }

  return holdingLease(deps, runId, owner, async (signal) => {
    const batchTokens = await deps.batches.partsTokens(runId);
    const shardUnits = await deps.units.list(runId, 'shard');
    const switched = await writeDeliveredState(deps, run, shardUnits, batchTokens, signal);
    // This run re-sent everything the superseded run it took over may have delivered: nothing of
    // that run is uncertain any more, and what it left goes.
    // A reconcile repairs what Braze's exports show, which need not be all that run changed: the next sync still takes it over.
    if (switched && run.takesOver && !run.reconcile && (await deps.destinations.settleUncertain(run.modelJsonPath, run.takesOver)))
      await deleteRunBlobs(deps, run.modelJsonPath, run.takesOver);
    // A run marked uncertain as it was about to be superseded, that moved on and completed after all, is not uncertain.
    if (switched) await deps.destinations.settleUncertain(run.modelJsonPath, run.runId);
    const owners = new Map<string, string>();
    for (const unit of await deps.units.list(runId, 'map')) owners.set(mapPartName(unit.index), unit.owner);
    for (const unit of shardUnits) owners.set(shardPartName(unit.index), unit.owner);
    for (const [batchId, token] of batchTokens) owners.set(`batch-${batchId}`, token);
    const report = await composeRejectsReport(deps.storage.stateContainer, runId, owners);
    signal.throwIfAborted();
    let record: ConnectorRecord | undefined;
    const { run: finished, changed } = await deps.runs.update(runId, (current) => {
      if (current.leaseOwner !== owner) return undefined;
      const finishedAt = new Date(deps.clock.now()).toISOString();
      record = completedRecord({ ...current, finishedAt });
      return { event: 'complete', finishedAt, leaseOwner: undefined, leaseUntil: undefined, ...owe(deps, current, 'completed', record) };
    });
    // Told before the destination is freed: a finalizer that dies in between leaves it owed (sent by
    // the finalize's retry, or the sweep). One whose lease ran out (another finalizer completed the run) leaves it to that one.
    if (changed) await announceOwed(deps, finished, record!);
    await deps.destinations.release(run.modelJsonPath, runId);
    await wakeWaiting(deps, run.modelJsonPath);
    // Failed profiles can be retried by a resume, which needs the parked batches and what each shard sent.
    if (finished.usersFailed === 0) await deleteWorkingBlobs(deps.storage.stateContainer, runId, true);
    deps.log.info(
      `run ${runId} completed: ${finished.rowsDelivered} rows delivered, ${finished.rowsSkippedUnchanged} unchanged, ${finished.rowsRejectedInput + finished.rowsRejectedBraze} rejected, ${finished.rowsFailed} failed; ${finished.usersDelivered} profiles (${finished.exitsEnqueued} exits) in ${finished.brazeRequests} requests; rejects report ${report.blobName} (${report.lines} lines)`,
    );
    return finished;
  });
}

function completedRecord(finished: RunRecord): ConnectorRecord {
  return {
    connectorEvent: 'RunCompleted',
    runId: finished.runId,
    destination: finished.destination,
    rowsRead: finished.rowsRead,
    rowsDelivered: finished.rowsDelivered,
    rowsUnchanged: finished.rowsSkippedUnchanged,
    rowsRejected: finished.rowsRejectedInput + finished.rowsRejectedBraze,
    rowsFailed: finished.rowsFailed,
    profilesDelivered: finished.usersDelivered,
    exits: finished.exitsEnqueued,
    brazeRequests: finished.brazeRequests,
    dataPointsSent: finished.dataPointsSent,
    dataPointsFullSend: finished.dataPointsFullSend,
    durationMs: Date.parse(finished.finishedAt ?? finished.updatedAt) - Date.parse(finished.createdAt),
  };
}
