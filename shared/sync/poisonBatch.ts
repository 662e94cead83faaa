import { describeError, InvalidInputError } from '../errors';
import { decodeBatchMessage } from '../queue/messages';
import type { ConnectorDeps } from './deps';
import { parkFailedBatch } from './deliverBatch';

/**
 * A batch message that failed every dequeue landed in the poison queue: count its profiles as
 * failed in the run (so the run can end and says so) and keep it for a resume.
 */
export async function handlePoisonBatch(deps: ConnectorDeps, payload: unknown): Promise<void> {
  let message;
  try {
    message = decodeBatchMessage(payload);
  } catch (error) {
    if (error instanceof InvalidInputError) {
      deps.log.error(`poison queue holds an unreadable message: ${describeError(error)}`);
      return;
    }
    throw error;
  }
  if (await deps.ledger.isBatchSettled(message.runId, message.batchId)) return;
  await parkFailedBatch(deps, message, 'the batch failed every attempt and went to the poison queue');
  deps.log.error(
    `batch ${message.batchId} of run ${message.runId} poisoned: ${message.users.length} profiles counted failed; POST /api/runs/${message.runId}/resume re-queues it`,
  );
}
