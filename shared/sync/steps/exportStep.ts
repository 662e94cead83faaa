import { isTerminal } from '../../runs/runRecord';
import { awaitSegmentExport, readSegmentExport } from '../../reconcile/segmentExport';
import type { StepKind } from '../stepRunner';

/**
 * A reconcile's export of one segment: asks Braze to export it (once), waits for the archive
 * without holding a slot or a claim, then routes its users to the shards (reconcile/segmentExport).
 */
export const exportStep: StepKind<{ url: string }> = {
  kind: 'export',
  prepare: async (deps, run, index) => {
    const readiness = await awaitSegmentExport(deps, run, index);
    if (readiness.kind === 'ready') return { kind: 'ready', inputs: { url: readiness.url } };
    // Waiting for Braze is progress: the sweep must not take the run for one a crash left behind and start it again.
    await deps.runs.update(run.runId, (current) => (isTerminal(current.status) ? undefined : {}));
    return { kind: 'wait', delayMs: readiness.delayMs, reason: readiness.reason };
  },
  work: (deps, run, index, owner, inputs, signal) => readSegmentExport(deps, run, index, inputs.url, owner, signal),
};
