import { encodeMessage } from '../queue/messages';
import { composeRejectsReport } from '../runs/rejectsReport';
import { isTerminal, type RunRecord } from '../runs/runRecord';
import { writeStateFromCandidate } from '../state/deliveredState';
import type { ConnectorDeps } from './deps';
import { leaseEnd, leaseHeld } from './lease';

/** Every profile of the run has an ending and none waits parked. */
export function isRunComplete(run: RunRecord): boolean {
  return run.enqueueDone && run.usersParked === 0 && run.usersDelivered + run.usersRejected + run.usersFailed >= run.usersEnqueued;
}

/** Asks for the run's finalization once its last batch is recorded; the run queue retries it if it fails. */
export async function requestFinalizeIfComplete(deps: ConnectorDeps, run: RunRecord): Promise<void> {
  if (isTerminal(run.status) || !isRunComplete(run)) return;
  await deps.storage.runQueue.sendMessage(encodeMessage({ kind: 'finalizeRun', runId: run.runId }));
}

/**
 * Ends a run: the new delivered state (only what Braze accepted), the rejects report, the final
 * status. Safe to repeat: the state blob and report are named by run and rewritten whole.
 */
export async function finalizeRun(deps: ConnectorDeps, runId: string): Promise<RunRecord | undefined> {
  const run = await deps.ledger.get(runId);
  if (!run || !isRunComplete(run)) return run;
  if (run.status === 'completed' || run.status === 'superseded') return run;
  // Several senders may ask at once: one finalizer holds the run at a time (two would race on the
  // same blobs); one that crashed is replaced when its lease runs out.
  const claim = await deps.ledger.update(runId, (current) => {
    const free = current.status === 'sending' || current.status === 'enqueuing';
    const abandoned = current.status === 'finalizing' && !leaseHeld(current, deps.clock.now());
    return free || abandoned ? { status: 'finalizing', leaseUntil: leaseEnd(deps) } : undefined;
  });
  if (!claim.changed) return claim.run;

  const state = deps.storage.stateContainer;
  const written = await writeStateFromCandidate(state, runId, run.modelJsonPath);
  const switched = await deps.ledger.switchStatePointer(run.modelJsonPath, {
    blobName: written.blobName,
    runId,
    runCreatedAt: run.createdAt,
    profiles: written.profiles,
  });
  if (switched.switched && switched.previous && switched.previous.blobName !== written.blobName) {
    await state.getBlobClient(switched.previous.blobName).deleteIfExists();
  }
  if (!switched.switched) {
    await state.getBlobClient(written.blobName).deleteIfExists();
    deps.log.warn(`run ${runId}: a newer run already wrote the delivered state; keeping that one`);
  }
  const report = await composeRejectsReport(state, runId);
  const { run: finished } = await deps.ledger.update(runId, (current) =>
    current.status === 'completed' ? undefined : { status: 'completed', finishedAt: new Date().toISOString(), leaseUntil: undefined },
  );
  await deps.ledger.releaseDestination(run.modelJsonPath, runId);
  deps.log.info(
    `run ${runId} completed: ${finished.rowsDelivered} rows delivered, ${finished.rowsSkippedUnchanged} unchanged, ${finished.rowsRejectedInput + finished.rowsRejectedBraze} rejected, ${finished.rowsFailed} failed; ${finished.usersDelivered} profiles (${finished.exitsEnqueued} exits) in ${finished.brazeRequests} requests; rejects report ${report.blobName} (${report.lines} lines)`,
  );
  return finished;
}
