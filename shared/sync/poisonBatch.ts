import { closeBatch, finishHandoff, receiveBatch, recordUnreadable } from '../batches/batchLife';
import { unsentPart } from '../batches/batchEnding';
import { UnreadableMessageError } from '../errors';
import { decodeBatchMessage, encodeMessage } from '../queue/messages';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { requestFinalizeIfComplete } from './finalizeRun';
import { sourceNames } from '../runs/runSources';

const POISON_REASON = 'the batch failed every attempt and went to the poison queue';

/**
 * A batch message that failed every dequeue landed in the poison queue. It goes through the same
 * batch life as any delivery: a batch already settled stays settled, a hand-off it recorded is
 * finished (its handed-off profiles belong to the child), and only what is still open is counted
 * failed and kept for a resume, so the run can end and says why.
 */
export async function handlePoisonBatch(deps: ConnectorDeps, payload: unknown): Promise<void> {
  let message;
  try {
    message = decodeBatchMessage(payload);
  } catch (error) {
    if (!(error instanceof UnreadableMessageError)) throw error;
    await recordUnreadable(deps, error, payload);
    return;
  }
  const run = await deps.runs.get(message.runId);
  if (!run) {
    deps.log.warn(`poisoned batch ${message.batchId}: run ${message.runId} does not exist; dropped`);
    return;
  }
  const receipt = await receiveBatch(deps, message, run.status !== 'superseded');
  if (receipt.kind === 'duplicate') return;
  if (receipt.kind === 'busy') {
    await sendToQueue(deps.storage.batchPoisonQueue, encodeMessage(message), receipt.untilMs - deps.clock.now() + 1_000);
    return;
  }
  const sources = await sourceNames(deps, run);
  if (receipt.kind === 'handingOff') {
    await finishHandoff(deps, message.runId, message.batchId, receipt.stored, sources);
  } else {
    const part = unsentPart(message.profiles, 'failed', POISON_REASON, sources);
    if ((await closeBatch(deps, receipt.batch, { kind: 'fail', part, keepForResume: true }, sources)) === 'lost') return;
    deps.log.error(
      `batch ${message.batchId} of run ${message.runId} poisoned: ${message.profiles.length} profiles counted failed; POST /api/runs/${message.runId}/resume re-queues it`,
    );
    deps.log.record({ connectorEvent: 'BatchPoisoned', runId: message.runId, batchId: message.batchId, profiles: message.profiles.length });
  }
  await requestFinalizeIfComplete(deps, message.runId);
}
