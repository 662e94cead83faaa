import { decodeRunMessage, encodeMessage } from '../queue/messages';
import type { ConnectorDeps } from './deps';
import { enqueueRun, type RunStepResult } from './enqueueRun';
import { finalizeRun } from './finalizeRun';

/** The run queue: start (read, diff, enqueue) and finalize runs. A deferral comes back later as a new message. */
export async function processRunMessage(deps: ConnectorDeps, payload: unknown): Promise<RunStepResult> {
  const message = decodeRunMessage(payload);
  if (message.kind === 'finalizeRun') {
    await finalizeRun(deps, message.runId);
    return { kind: 'done' };
  }
  const result = await enqueueRun(deps, message.runId);
  if (result.kind === 'deferred') {
    deps.log.info(`run ${message.runId} deferred ${Math.ceil(result.delayMs / 1000)} s: ${result.reason}`);
    await deps.storage.runQueue.sendMessage(encodeMessage(message), { visibilityTimeout: Math.ceil(result.delayMs / 1000) });
  }
  return result;
}
