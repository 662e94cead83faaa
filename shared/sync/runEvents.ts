import type { BrazeAuthError } from '../errors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { wakeWaiting } from './claimDestination';
import { announce } from './notify';

/** Bad credentials: the run stops sending; its remaining batches park until a resume. */
export async function haltRun(deps: ConnectorDeps, runId: string, error: BrazeAuthError, workspace?: string): Promise<void> {
  const key =
    workspace === undefined
      ? 'the Braze API key (BRAZE_API_KEY or its Key Vault secret; it needs users.track)'
      : `the API key of Braze workspace "${workspace}" (its apiKeySetting or Key Vault secret in the mapping config; it needs users.track)`;
  const { changed, run } = await deps.runs.update(runId, (current) =>
    current.status === 'halted'
      ? undefined
      : {
          event: 'halt',
          error: `${error.message}. Fix ${key}, then POST /api/runs/${runId}/resume.`,
        },
  );
  if (changed && run.status === 'halted') {
    deps.log.error(`run ${runId} halted: ${error.message}`);
    await announce(deps, run, { connectorEvent: 'RunHalted', runId, destination: run.destination, brazeStatus: error.status, reason: error.message });
    // A newer refresh waiting for the destination may take over from a halted run now.
    await wakeWaiting(deps, run.modelJsonPath);
  }
}
