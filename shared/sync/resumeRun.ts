import { InvalidInputError } from '../errors';
import { decodeBatchMessage, encodeMessage } from '../queue/messages';
import type { RunRecord } from '../runs/runRecord';
import type { ConnectorDeps } from './deps';
import { listParked } from './parkedBatches';

export interface ResumeOutcome {
  runId: string;
  requeuedBatches: number;
  requeuedProfiles: number;
  status: RunRecord['status'];
}

/**
 * Re-queues a run's parked batches (bad credentials) and failed ones (Braze gave out, poison),
 * once the cause is fixed. Only while no newer run owns the destination: a newer snapshot already
 * carries whatever these batches would have sent.
 */
export async function resumeRun(deps: ConnectorDeps, runId: string): Promise<ResumeOutcome> {
  const run = await deps.ledger.get(runId);
  if (!run) throw new InvalidInputError(`run ${runId} does not exist`);
  if (run.status === 'superseded')
    throw new InvalidInputError(`run ${runId} was superseded by run ${run.supersededBy}, which sends the newer snapshot; nothing to resume`);
  const lock = await deps.ledger.activeRun(run.modelJsonPath);
  if (lock && lock.runId !== runId) throw new InvalidInputError(`run ${lock.runId} now owns destination ${run.destination}; resume that one instead`);
  if (!lock && !(await deps.ledger.claimDestination(run.modelJsonPath, runId, undefined))) {
    throw new InvalidInputError(`another run just claimed destination ${run.destination}`);
  }

  // The run goes back to sending before the batches do, so they are not parked again.
  await deps.ledger.update(runId, (current) =>
    current.status === 'halted' || (current.status === 'completed' && current.usersFailed > 0)
      ? { status: 'sending', error: undefined, finishedAt: undefined }
      : undefined,
  );
  let requeuedBatches = 0;
  let requeuedProfiles = 0;
  for await (const parked of listParked(deps.storage.stateContainer, runId)) {
    const message = decodeBatchMessage(parked.text);
    await deps.storage.batchQueue.sendMessage(encodeMessage({ ...message, deferrals: 0, resumed: true }));
    await deps.storage.stateContainer.getBlobClient(parked.blobName).deleteIfExists();
    requeuedBatches += 1;
    requeuedProfiles += message.users.length;
  }
  const after = (await deps.ledger.get(runId))!;
  deps.log.info(`run ${runId} resumed: ${requeuedBatches} batches (${requeuedProfiles} profiles) re-queued`);
  return { runId, requeuedBatches, requeuedProfiles, status: after.status };
}
