import { describeError, type ExportNotReadyError, type InvalidInputError } from '../errors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { deleteWorkingBlobs } from '../runs/runBlobs';
import { statusAfter, type RunRecord } from '../runs/runRecord';
import { deleteStateFolder } from '../state/deliveredState';
import { wakeWaiting } from './claimDestination';
import { announceOwed, owe } from './notify';

/** Bad input: nothing more can be done with this refresh. The run ends `failed` with the reason, and frees its destination. */
export async function failRun(deps: ConnectorDeps, run: RunRecord, error: InvalidInputError | ExportNotReadyError): Promise<void> {
  deps.log.error(`run ${run.runId} failed: ${describeError(error)}`);
  const record = { connectorEvent: 'RunFailed', runId: run.runId, destination: run.destination, reason: error.message } as const;
  const failed = await deps.runs.update(run.runId, (current) => {
    const status = statusAfter(current.status, 'fail');
    if (!status) return undefined;
    return { event: 'fail', error: error.message, finishedAt: new Date(deps.clock.now()).toISOString(), ...owe(deps, current, status, record) };
  });
  if (!failed.changed) return;
  await announceOwed(deps, failed.run, record);
  await deps.destinations.release(run.modelJsonPath, run.runId);
  await deleteWorkingBlobs(deps.storage.stateContainer, run.runId);
  await deleteStateFolder(deps.storage.stateContainer, run.modelJsonPath, run.runId);
  await wakeWaiting(deps, run.modelJsonPath);
}
