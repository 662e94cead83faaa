import { BrazeAuthError, type BrazeUnreachableError } from '../errors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { wakeWaiting } from './claimDestination';
import { announceOwed, owe } from './notify';
import { statusAfter } from '../runs/runRecord';
import type { ConnectorRecord } from '../telemetry';

/**
 * What a person fixes, named where it is set: the key after a 401/403, the endpoint when its host
 * does not resolve or nothing listens there.
 */
function whatToFix(error: BrazeAuthError | BrazeUnreachableError, workspace: string | undefined): string {
  if (error instanceof BrazeAuthError)
    return workspace === undefined
      ? 'Fix the Braze API key (BRAZE_API_KEY or its Key Vault secret; it needs users.track)'
      : `Fix the API key of Braze workspace "${workspace}" (its apiKeySetting or Key Vault secret in the mapping config; it needs users.track)`;
  const what = error.code === 'ENOTFOUND' ? 'its host name' : 'its host and port';
  return workspace === undefined
    ? `Check BRAZE_REST_ENDPOINT (${what})`
    : `Check the restEndpoint of Braze workspace "${workspace}" in the mapping config (${what})`;
}

/**
 * Bad credentials, or an endpoint that cannot be reached: the run stops sending; its remaining
 * batches park until a resume, which sends them once the cause is fixed.
 */
export async function haltRun(deps: ConnectorDeps, runId: string, error: BrazeAuthError | BrazeUnreachableError, workspace?: string): Promise<void> {
  // No HTTP answer when the endpoint cannot be reached: 0, as for a BrazeRetryableError without one.
  const brazeStatus = error instanceof BrazeAuthError ? error.status : 0;
  const recordOf = (destination: string): ConnectorRecord => ({ connectorEvent: 'RunHalted', runId, destination, brazeStatus, reason: error.message });
  const { changed, run } = await deps.runs.update(runId, (current) => {
    if (current.status === 'halted') return undefined;
    const status = statusAfter(current.status, 'halt');
    return {
      event: 'halt',
      error: `${error.message}. ${whatToFix(error, workspace)}, then POST /api/runs/${runId}/resume.`,
      ...(status ? owe(deps, current, status, recordOf(current.destination)) : {}),
    };
  });
  if (changed && run.status === 'halted') {
    deps.log.error(`run ${runId} halted: ${error.message}`);
    await announceOwed(deps, run, recordOf(run.destination));
    // A newer refresh waiting for the destination may take over from a halted run now.
    await wakeWaiting(deps, run.modelJsonPath);
  }
}
