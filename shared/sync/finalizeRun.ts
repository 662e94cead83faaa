import { encodeMessage } from '../queue/messages';
import { composeRejectsReport } from '../runs/rejectsReport';
import { candidateBlobName, deleteWorkingBlobs, newToken } from '../runs/runBlobs';
import { statusAfter, type RunRecord } from '../runs/runRecord';
import { writeStateFromCandidate } from '../state/deliveredState';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from './deps';
import { holdingLease, leaseEnd, leaseHeld } from './lease';

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
  if (!claim.changed) return claim.run;

  return holdingLease(deps, runId, owner, async (signal) => {
    const state = deps.storage.stateContainer;
    const batchTokens = await deps.batches.partsTokens(runId);
    // A run resumed after it completed has no candidate left: its state was written the first time.
    const candidate = run.enqueuedBy ? { runId, modelJsonPath: run.modelJsonPath, enqueuedBy: run.enqueuedBy } : undefined;
    if (candidate && (await state.getBlobClient(candidateBlobName(runId, candidate.enqueuedBy)).exists())) {
      const written = await writeStateFromCandidate(state, candidate, batchTokens, signal);
      signal.throwIfAborted();
      const switched = await deps.destinations.switchStatePointer(run.modelJsonPath, {
        blobName: written.blobName,
        runId,
        runCreatedAt: run.createdAt,
        profiles: written.profiles,
      });
      if (switched.switched && switched.previous && switched.previous.blobName !== written.blobName) {
        await state.getBlobClient(switched.previous.blobName).deleteIfExists();
        // The run that wrote the previous state can no longer be resumed: its working blobs go.
        if (switched.previous.runId !== runId) await deleteWorkingBlobs(state, switched.previous.runId);
      }
      if (!switched.switched) {
        await state.getBlobClient(written.blobName).deleteIfExists();
        deps.log.warn(`run ${runId}: a newer run already wrote the delivered state; keeping that one`);
      }
    }
    const report = await composeRejectsReport(state, runId, run.enqueuedBy, batchTokens);
    signal.throwIfAborted();
    const { run: finished } = await deps.runs.update(runId, (current) =>
      current.leaseOwner === owner
        ? { event: 'complete', finishedAt: new Date(deps.clock.now()).toISOString(), leaseOwner: undefined, leaseUntil: undefined }
        : undefined,
    );
    await deps.destinations.release(run.modelJsonPath, runId);
    // Failed profiles can be retried by a resume, which needs the parked batches and the candidate state.
    if (finished.usersFailed === 0) await deleteWorkingBlobs(state, runId);
    deps.log.record({
      connectorEvent: 'RunCompleted',
      runId,
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
    });
    deps.log.info(
      `run ${runId} completed: ${finished.rowsDelivered} rows delivered, ${finished.rowsSkippedUnchanged} unchanged, ${finished.rowsRejectedInput + finished.rowsRejectedBraze} rejected, ${finished.rowsFailed} failed; ${finished.usersDelivered} profiles (${finished.exitsEnqueued} exits) in ${finished.brazeRequests} requests; rejects report ${report.blobName} (${report.lines} lines)`,
    );
    return finished;
  });
}
