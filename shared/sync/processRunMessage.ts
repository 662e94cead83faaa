import { UnreadableMessageError } from '../errors';
import { decodeRunMessage, encodeMessage } from '../queue/messages';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from './deps';
import { enqueueRun, runUnit, type RunStepResult } from './enqueueRun';
import { finalizeRun } from './finalizeRun';

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
  if (message.kind === 'finalizeRun') {
    await finalizeRun(deps, message.runId);
    return { kind: 'done' };
  }
  const result =
    message.kind === 'mapPartition'
      ? await runUnit(deps, message.runId, 'map', message.partition)
      : message.kind === 'diffShard'
        ? await runUnit(deps, message.runId, 'shard', message.shard)
        : message.kind === 'exportSegment'
          ? await runUnit(deps, message.runId, 'export', message.segment)
          : await enqueueRun(deps, message.runId);
  if (result.kind === 'deferred') {
    deps.log.info(`run ${message.runId} deferred ${Math.ceil(result.delayMs / 1000)} s: ${result.reason}`);
    await sendToQueue(deps.storage.runQueue, encodeMessage(message), result.delayMs);
  }
  return result;
}
