import { UnreadableMessageError } from '../errors';
import { decodeRunMessage, encodeMessage } from '../queue/messages';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { startRun, type RunStepResult } from './startRun';
import { runStep } from './stepRunner';
import { readHere, readOn } from './readHere';
import { finalizeRun } from './finalizeRun';
import { leaseHeld } from './lease';
import { deliverNotification } from './notify';

/** The run queue: start (read, diff, enqueue) and finalize runs. A deferral comes back later as a new message. */
export async function processRunMessage(deps: ConnectorDeps, payload: unknown): Promise<RunStepResult> {
  let message;
  try {
    message = decodeRunMessage(payload);
  } catch (error) {
    if (!(error instanceof UnreadableMessageError)) throw error;
    // Five more tries cannot make it readable; a run that lost its start is restarted by the timer's sweep.
    deps.log.error(`an unreadable run message was dropped: ${error.message}`);
    return { kind: 'done' };
  }
  if (message.kind === 'notify') {
    await deliverNotification(deps, message);
    return { kind: 'done' };
  }
  if (message.kind === 'finalizeRun') {
    const run = await finalizeRun(deps, message.runId);
    // Another finalizer holds the run: if it died, its lease runs out, and this one takes over then.
    if (run?.status === 'finalizing' && run.leaseUntil !== undefined && leaseHeld(run, deps.clock.now())) {
      const delayMs = Date.parse(run.leaseUntil) - deps.clock.now() + 1_000;
      await sendToQueue(deps.storage.runQueue, encodeMessage(message), delayMs);
      return { kind: 'deferred', delayMs, reason: `run ${run.runId} is being finalized` };
    }
    return { kind: 'done' };
  }
  const result =
    message.kind === 'mapPartition'
      ? await runStep(deps, message.runId, 'map', message.partition)
      : message.kind === 'diffShard'
        ? await runStep(deps, message.runId, 'shard', message.shard)
        : message.kind === 'exportSegment'
          ? await runStep(deps, message.runId, 'export', message.segment)
          : await startRun(deps, message.runId, message.lookAt);
  if (result.kind === 'deferred') {
    deps.log.info(`run ${message.runId} deferred ${(result.delayMs / 1000).toFixed(1)} s: ${result.reason}`);
    const next = message.kind === 'startRun' && result.lookAt !== undefined ? { ...message, lookAt: result.lookAt } : message;
    await sendToQueue(deps.storage.runQueue, encodeMessage(next), result.delayMs);
    return result;
  }
  // The instance that started the run, or worked a step of it, reads on: the run's open steps are
  // worked here without waiting for a queue hop each.
  if (message.kind === 'startRun') await readHere(deps, message.runId);
  else await readOn(deps, message.runId);
  return result;
}
