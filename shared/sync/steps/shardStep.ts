import type { ConnectorDeps } from '../../runs/connectorDeps';
import type { RunRecord } from '../../runs/runRecord';
import { diffShard } from '../../reader/diffShard';
import { reconcileShard } from '../../reconcile/reconcileShard';
import type { UncertainRun } from '../../state/deliveredState';
import { phaseDone } from '../readingPlan';
import { runStateBase } from '../stateBase';
import type { StepKind } from '../stepRunner';

interface ShardInputs {
  /** Whose outputs the step reads: the map (and export) steps' owners, by index. */
  mapOwners: Map<number, string>;
  exportOwners: Map<number, string>;
  /** Some rows are keyed by e-mail or alias rather than an external_id. */
  fallbackKeyed: boolean;
}

/**
 * One shard, once the whole refresh is read: diffed against its slice of the delivered state the
 * run was planned on (reader/diffShard), or, for a reconcile, against Braze's exports of it
 * (reconcile/reconcileShard).
 */
export const shardStep: StepKind<ShardInputs> = {
  kind: 'shard',
  prepare: async (deps, run, index) => {
    if (!(await phaseDone(deps, run, 'map')))
      return { kind: 'wait', delayMs: 5_000, reason: `shard ${index} waits for the reading of every partition${run.reconcile ? " and Braze's exports" : ''}` };
    const maps = await deps.units.list(run.runId, 'map');
    const exports = run.reconcile ? await deps.units.list(run.runId, 'export') : [];
    return {
      kind: 'ready',
      inputs: {
        mapOwners: new Map(maps.map((u) => [u.index, u.owner])),
        exportOwners: new Map(exports.map((u) => [u.index, u.owner])),
        fallbackKeyed: maps.some((u) => (u.totals?.rowsKeyedByFallback ?? 0) > 0),
      },
    };
  },
  work: async (deps, run, index, owner, inputs, signal) => {
    const previous = await runStateBase(deps, run);
    if (run.reconcile) return reconcileShard(deps, run, index, owner, inputs.mapOwners, inputs.exportOwners, inputs.fallbackKeyed, previous, signal);
    return diffShard(deps, run, index, owner, inputs.mapOwners, previous, await uncertainRunOf(deps, run), signal);
  },
};

/** The superseded run whose possibly delivered profiles this run re-sends in full, with what its shards left. */
async function uncertainRunOf(deps: ConnectorDeps, run: RunRecord): Promise<UncertainRun | undefined> {
  if (!run.takesOver) return undefined;
  const uncertain = await deps.runs.get(run.takesOver);
  if (!uncertain) throw new Error(`run ${run.runId}: run ${run.takesOver}, whose deliveries it must re-send, has no record`);
  const shardOutputs = (await deps.units.list(uncertain.runId, 'shard'))
    .filter((u) => u.state === 'done')
    .map((u) => ({ index: u.index, owner: u.owner, stateBlob: u.totals?.stateBlob }));
  return { runId: uncertain.runId, shards: uncertain.shards, shardOutputs };
}
