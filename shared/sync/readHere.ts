import type { ConnectorDeps } from '../runs/connectorDeps';
import { describeError } from '../errors';
import { isTerminal } from '../runs/runRecord';
import { readSources, refreshBytes } from '../runs/runSources';
import { pendingSteps } from './readingPlan';
import { runStep } from './stepRunner';

/**
 * A small refresh (its partitions at most SMALL_REFRESH_MAX_BYTES) is read by the instance that
 * started its run: once the start is handled (processRunMessage), the run's steps are worked here,
 * one after another, instead of waiting for the queue to hand each phase to an instance — for a
 * small refresh each hop costs more than the step. Nothing else changes: each step is claimed and
 * recorded as always, and the steps' messages are on the queue as always, so a copy another
 * instance takes first simply wins the claim, and a crash here leaves the run to those copies.
 * Each step is tried once per call; one that must wait (claimed elsewhere, or waiting for
 * Braze's export) ends it.
 */
export async function readHere(deps: ConnectorDeps, runId: string): Promise<void> {
  const limit = deps.settings.smallRefreshMaxBytes;
  if (limit === 0) return;
  try {
    await readStepsHere(deps, runId, limit);
  } catch (error) {
    // The run is not hurt: its steps' messages carry it. Failing the start would only send them again.
    deps.log.warn(`run ${runId}: reading here stopped (${describeError(error)}); the queue carries the rest`);
  }
}

/**
 * A small refresh's steps take seconds; past this the instance stops taking new ones (a small
 * refresh to a destination with a large state still has many shards, and a reconcile's diff steps
 * read Braze's exports): the rest go through the queue, well within the function's timeout.
 */
export const READ_HERE_BUDGET_MS = 30_000;

async function readStepsHere(deps: ConnectorDeps, runId: string, limit: number): Promise<void> {
  const until = deps.clock.now() + READ_HERE_BUDGET_MS;
  const tried = new Set<string>();
  while (deps.clock.now() < until) {
    const run = await deps.runs.get(runId);
    if (!run || isTerminal(run.status) || run.status === 'queued' || run.status === 'finalizing' || run.enqueueDone || run.shards === 0) return;
    if (tried.size === 0 && refreshBytes(await readSources(deps, run)) > limit) return;
    const step = (await pendingSteps(deps, run)).find((s) => !tried.has(`${s.kind}-${s.index}`));
    if (!step) return;
    tried.add(`${step.kind}-${step.index}`);
    if ((await runStep(deps, runId, step.kind, step.index)).kind === 'deferred') return;
  }
}
