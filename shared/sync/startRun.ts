import { guardEnabled, runsStaged } from '../config/syncConfig';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { isTerminal } from '../runs/runRecord';
import { partitionList, readSources, refreshBytes, runDestination } from '../runs/runSources';
import { readPreviousState, shardCountFor } from '../state/deliveredState';
import { claimDestination } from './claimDestination';
import { finalizeIfReadingEnded } from './finalizeRun';
import { advance } from './readingPlan';
import { stateBaseText } from './stateBase';

export type RunStepResult =
  { kind: 'done' } | { kind: 'deferred'; delayMs: number; reason: string; /** A waiting run's look, carried by its next message. */ lookAt?: number };

/** Rows a CSV byte holds on average in CI exports, for sizing a first run that has no state to go by. */
const BYTES_PER_PROFILE_ESTIMATE = 150;

/**
 * A run's start (also how a run whose messages were lost gets going again): it takes its
 * destination (claimDestination: the newest snapshot wins), plans its reading once — how many
 * shards, from the previous state's size or the partitions' bytes; the state it diffs against;
 * whether its batches wait for the guard — and sends the steps of its reading that are not done
 * (readingPlan).
 */
export async function startRun(deps: ConnectorDeps, runId: string, lookAt?: number): Promise<RunStepResult> {
  let run = await deps.runs.get(runId);
  if (!run) {
    deps.log.warn(`run ${runId} does not exist; message dropped`);
    return { kind: 'done' };
  }
  if (isTerminal(run.status)) return { kind: 'done' };
  if (run.status === 'finalizing' || run.enqueueDone) {
    await finalizeIfReadingEnded(deps, run);
    return { kind: 'done' };
  }
  // Wakes, sweeps and triggers each send a start: of the copies a waiting run has, the one that
  // looked last keeps looking; the others stop, instead of multiplying while it waits for days.
  if (lookAt !== undefined && run.status === 'queued' && run.lookedAt !== undefined && Date.parse(run.lookedAt) > lookAt) return { kind: 'done' };
  // A preview changes nothing of the destination: it neither waits for nor holds its lock.
  if (!run.dryRun) {
    const claim = await claimDestination(deps, run);
    if (claim.kind === 'wait') {
      const now = deps.clock.now();
      // Looking is progress: the sweep restarts only a run nothing happens to.
      await deps.runs.update(runId, (current) => (current.status === 'queued' ? { lookedAt: new Date(now).toISOString() } : undefined));
      return { kind: 'deferred', delayMs: claim.delayMs, reason: claim.reason, lookAt: now };
    }
    if (claim.kind === 'superseded') return { kind: 'done' };
    run = claim.run;
  }
  if (run.shards === 0) {
    // The state is read once, here: every shard diffs against this one, whatever moves meanwhile.
    const pointer = await deps.destinations.statePointer(run.modelJsonPath);
    const previous = await readPreviousState(deps.storage.stateContainer, pointer);
    const segments = await readSources(deps, run);
    const bytes = refreshBytes(segments);
    const estimate =
      previous.format === 2 ? previous.manifest.profiles : previous.format === 1 ? previous.profiles : Math.ceil(bytes / BYTES_PER_PROFILE_ESTIMATE);
    const shards = shardCountFor(estimate, previous, deps.settings.profilesPerShard);
    // Its batches wait until the run is within the guard: only then can it be held with nothing sent.
    // A first sync (nothing delivered yet) is held only for the users it would delete; a reconcile
    // guards the members Braze holds.
    const destination = runDestination(deps, run);
    const staged = !run.dryRun && (run.reconcile ? guardEnabled(destination.guard) : runsStaged(destination, previous.format !== 0));
    ({ run } = await deps.runs.update(runId, (current) =>
      current.shards === 0 && current.status === 'queued' ? { shards, stateBase: stateBaseText(pointer), staged, event: 'startEnqueue' } : undefined,
    ));
    // Superseded while it planned (a newer refresh took over before it started): nothing to read.
    if (isTerminal(run.status)) return { kind: 'done' };
    deps.log.info(`run ${runId}: ${partitionList(segments).length} partitions into ${run.shards} shards`);
  }
  await advance(deps, run);
  return { kind: 'done' };
}
