import { encodeMessage } from '../queue/messages';
import { isTerminal } from '../runs/runRecord';
import type { ConnectorDeps } from './deps';
import { leaseHeld } from './lease';
import { isRunComplete } from './finalizeRun';

/** A queued run older than this without progress lost its message (a crash between insert and send). */
const STALE_MS = 5 * 60_000;

/**
 * Picks up runs a crash left behind: one whose last batch was recorded but whose finalize message
 * was lost, one queued or enqueuing whose worker died. Run by every timer tick.
 */
export async function sweepRuns(deps: ConnectorDeps): Promise<{ restarted: string[]; finalizing: string[] }> {
  const restarted: string[] = [];
  const finalizing: string[] = [];
  const now = deps.clock.now();
  for (const run of await deps.ledger.listRuns()) {
    if (isTerminal(run.status) || run.status === 'halted') continue;
    if (isRunComplete(run)) {
      await deps.storage.runQueue.sendMessage(encodeMessage({ kind: 'finalizeRun', runId: run.runId }));
      finalizing.push(run.runId);
      continue;
    }
    const leaseOver = !leaseHeld(run, now);
    if ((run.status === 'queued' || run.status === 'enqueuing') && leaseOver && now - Date.parse(run.updatedAt) > STALE_MS) {
      await deps.storage.runQueue.sendMessage(encodeMessage({ kind: 'startRun', runId: run.runId }));
      restarted.push(run.runId);
    }
  }
  return { restarted, finalizing };
}
