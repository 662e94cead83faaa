import { encodeMessage } from '../queue/messages';
import { isTerminal, statusAfter } from '../runs/runRecord';
import { deleteRunFolder } from '../runs/runBlobs';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from './deps';
import { isRunComplete } from './finalizeRun';
import { leaseHeld } from './lease';

/** A run whose enqueue has not finished, with no lease and no change for this long, lost its message (a crash between insert and send). */
const STALE_MS = 5 * 60_000;

export interface SweepOutcome {
  /** Runs whose enqueue was started again. */
  restarted: string[];
  /** Complete runs whose finalize request was sent again. */
  finalizing: string[];
  /** Runs just marked stalled, with how long they had made no progress. */
  stalled: { runId: string; quietMinutes: number }[];
  /** Ended runs older than RUN_RETENTION_DAYS, removed with their blobs. */
  expired: string[];
}

/**
 * Picks up runs a crash or a lost message left behind, every timer tick: one whose last batch was
 * recorded but whose finalize message was lost, one whose enqueuer died, and one that waits for
 * batches that no longer come (lost on a poison queue, a failed poison handler): it becomes
 * `stalled`, which a resume or a newer refresh of the destination gets out of.
 */
export async function sweepRuns(deps: ConnectorDeps): Promise<SweepOutcome> {
  const outcome: SweepOutcome = { restarted: [], finalizing: [], stalled: [], expired: [] };
  const now = deps.clock.now();
  for (const run of await deps.runs.listRuns()) {
    if (isTerminal(run.status) && now - Date.parse(run.finishedAt ?? run.updatedAt) > deps.settings.runRetentionMs) {
      // The blobs first: a sweep interrupted here finds the run again next time.
      await deleteRunFolder(deps.storage.stateContainer, run.runId);
      await deps.runs.deleteRun(run.runId);
      outcome.expired.push(run.runId);
      deps.log.record({ connectorEvent: 'RunExpired', runId: run.runId, destination: run.destination });
      continue;
    }
    if (isTerminal(run.status) || run.status === 'halted') continue;
    if (isRunComplete(run)) {
      if (statusAfter(run.status, 'startFinalize') && !(run.status === 'finalizing' && leaseHeld(run, now))) {
        await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'finalizeRun', runId: run.runId }));
        outcome.finalizing.push(run.runId);
      }
      continue;
    }
    if (!run.enqueueDone) {
      if (!leaseHeld(run, now) && now - Date.parse(run.updatedAt) > STALE_MS) {
        await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'startRun', runId: run.runId }));
        outcome.restarted.push(run.runId);
      }
      continue;
    }
    const quietMs = now - Date.parse(run.lastProgressAt ?? run.updatedAt);
    if (run.status === 'sending' && quietMs > deps.settings.runStallMs) {
      const minutes = Math.floor(quietMs / 60_000);
      const { changed } = await deps.runs.update(run.runId, (current) =>
        statusAfter(current.status, 'stall')
          ? {
              event: 'stall',
              error: `no batch ended for ${minutes} minutes while ${current.usersEnqueued - current.usersDelivered - current.usersRejected - current.usersFailed} profiles are pending. POST /api/runs/${run.runId}/resume enqueues its batches again (those that ended are skipped); a newer refresh of the destination supersedes it.`,
            }
          : undefined,
      );
      if (changed) {
        const pending = run.usersEnqueued - run.usersDelivered - run.usersRejected - run.usersFailed;
        outcome.stalled.push({ runId: run.runId, quietMinutes: minutes });
        deps.log.error(`run ${run.runId} stalled: no batch ended for ${minutes} minutes`);
        deps.log.record({
          connectorEvent: 'RunStalled',
          runId: run.runId,
          destination: run.destination,
          quietMinutes: minutes,
          profilesPending: pending,
          reason: `no batch ended for ${minutes} minutes`,
        });
      }
    }
  }
  return outcome;
}
