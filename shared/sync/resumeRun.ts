import { encodeMessage } from '../queue/messages';
import { hasParked, reparkFailed, requeueParked } from '../batches/batchLife';
import { isTerminal, statusAfter, type RunRecord } from '../runs/runRecord';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { wroteLater } from '../runs/destinationStore';
import { requestFinalizeIfComplete } from './finalizeRun';

export type ResumeOutcome =
  | { kind: 'resumed'; runId: string; requeuedBatches: number; requeuedProfiles: number; reenqueued: boolean; status: RunRecord['status'] }
  | { kind: 'notFound'; runId: string }
  /** The run cannot be resumed; `reason` says why and what to do instead. */
  | { kind: 'refused'; runId: string; reason: string };

/**
 * Re-queues a run's parked batches (bad credentials) and failed ones (Braze gave out, poison) once
 * the cause is fixed; a stalled run also enqueues its batches again, so any whose message was lost
 * is sent (the ones that ended are recognised and skipped). Refused once a newer run owns the
 * destination or has written its delivered state: that snapshot already carries whatever these
 * batches would send, and re-sending the older one would undo it.
 */
export async function resumeRun(deps: ConnectorDeps, runId: string): Promise<ResumeOutcome> {
  const run = await deps.runs.get(runId);
  if (!run) return { kind: 'notFound', runId };
  const refuse = (reason: string): ResumeOutcome => ({ kind: 'refused', runId, reason });
  if (run.dryRun) return refuse(`run ${runId} is a dry run: it sends nothing; start a sync without dryRun to send`);
  if (run.status === 'superseded') return refuse(`run ${runId} was superseded by run ${run.supersededBy}, which sends the newer snapshot; nothing to resume`);
  if (run.status === 'held')
    return refuse(`run ${runId} is held by the destination's guard and has sent nothing: POST /api/runs/${runId}/approve sends its preview, /cancel ends it`);
  if (run.status === 'cancelled') return refuse(`run ${runId} was cancelled; start a new sync`);
  if (run.status === 'failed') return refuse(`run ${runId} failed (${run.error ?? 'bad input'}); start a new sync once the cause is fixed`);
  // A resume whose worker failed after it set the run sending left batches parked: asked again, it
  // finishes (a sending run with nothing parked has nothing to resume).
  const unfinished = run.status === 'sending' && run.usersParked > 0 && (await hasParked(deps, runId));
  if (!statusAfter(run.status, 'resume') && !unfinished) return refuse(`run ${runId} is ${run.status}: only a halted, stalled or completed run is resumed`);
  if (run.status === 'completed' && run.usersFailed === 0 && run.usersParked === 0)
    return refuse(`run ${runId} completed with every profile delivered or rejected; nothing to resume`);
  // The destination first, then the state: a run that writes a newer state holds the destination
  // until it has, so what the pointer says once this run holds it cannot change under it.
  const lock = await deps.destinations.lock(run.modelJsonPath);
  if (lock.runId && lock.runId !== runId) {
    // A run that has ended holds the lock only until its finalizer (or the sweep) lets go: it is free.
    const holder = await deps.runs.get(lock.runId);
    if (holder && !isTerminal(holder.status)) return refuse(`run ${lock.runId} now owns destination ${run.destination}; resume that one instead`);
  }
  const claiming = lock.runId !== runId;
  let generation = lock.generation;
  if (claiming) {
    const claimed = await deps.destinations.claim(run.modelJsonPath, runId, lock);
    if (claimed === undefined) return refuse(`another run just claimed destination ${run.destination}`);
    generation = claimed;
  }
  const pointer = await deps.destinations.statePointer(run.modelJsonPath);
  if (pointer && pointer.runId !== runId && wroteLater(pointer, { generation: run.generation, runCreatedAt: run.createdAt })) {
    if (claiming) await deps.destinations.release(run.modelJsonPath, runId);
    return refuse(
      `run ${pointer.runId} synced a newer refresh of ${run.destination} after this run; resuming would re-send this run's older snapshot over it. Its failed profiles are re-sent by the next refresh (or POST /api/sync with {"force": true})`,
    );
  }

  // Its failed batches count as parked first, so the run waits for them from the moment it sends.
  await reparkFailed(deps, runId);
  // A stalled run's shard steps run again: batches that ended are recognised by their ids, lost ones
  // are sent. Reset before the run moves: a resume that fails here leaves it stalled, to be resumed
  // again (once sending, it would be refused, and its steps would never run again).
  const wasStalled = run.status === 'stalled';
  if (wasStalled) await deps.units.reset(runId, 'shard');
  // The run goes back to sending before its batches do, so they are not parked again.
  const { run: resumed } = await deps.runs.update(runId, (current) =>
    statusAfter(current.status, 'resume')
      ? { event: 'resume', error: undefined, finishedAt: undefined, generation, ...(current.status === 'stalled' ? { enqueueDone: false } : {}) }
      : undefined,
  );
  const { batches: requeuedBatches, profiles: requeuedProfiles } = await requeueParked(deps, runId);
  const reenqueued = !resumed.enqueueDone;
  if (reenqueued) await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'startRun', runId }));
  else await requestFinalizeIfComplete(deps, runId);
  deps.log.info(
    `run ${runId} resumed: ${requeuedBatches} batches (${requeuedProfiles} profiles) re-queued${reenqueued ? `; ${wasStalled ? 'its batches are enqueued again' : 'its enqueue goes on'}` : ''}`,
  );
  return { kind: 'resumed', runId, requeuedBatches, requeuedProfiles, reenqueued, status: resumed.status };
}
