import type { ConnectorDeps } from '../runs/connectorDeps';
import { describeError } from '../errors';
import { isTerminal } from '../runs/runRecord';
import { readSources, refreshBytes } from '../runs/runSources';
import { openSteps } from './readingPlan';
import { runStep } from './stepRunner';

/**
 * After a run's start: a small refresh (its partitions at most SMALL_REFRESH_MAX_BYTES) is read by
 * the instance that started it, its steps worked here one after another instead of waiting for
 * the queue to hand each phase to an instance — for a small refresh each hop costs more than the
 * step. A larger one is read on as after any step (readOn).
 */
export async function readHere(deps: ConnectorDeps, runId: string): Promise<void> {
  const limit = deps.settings.smallRefreshMaxBytes;
  const small = async () => {
    const run = await deps.runs.get(runId);
    return run !== undefined && run.shards > 0 && refreshBytes(await readSources(deps, run)) <= limit;
  };
  const readOnMs = deps.settings.readOnMs;
  await readStepsHere(deps, runId, limit > 0 && (await small().catch(() => false)) ? Math.max(READ_HERE_BUDGET_MS, readOnMs) : readOnMs);
}

/**
 * After a step, the instance that worked it goes on with the run's open steps — those no instance
 * has claimed — one after another, for up to READ_ON_SECONDS, instead of going back to the queue
 * for the next: a step's message that comes back to the queue (handed back by a busy instance)
 * waits a polling interval or more before an instance takes it, where this one is free now.
 */
export async function readOn(deps: ConnectorDeps, runId: string): Promise<void> {
  await readStepsHere(deps, runId, deps.settings.readOnMs);
}

/**
 * A small refresh's steps take seconds; past this the instance stops taking new ones (a small
 * refresh to a destination with a large state still has many shards, and a reconcile's diff steps
 * read Braze's exports): the rest go through the queue, well within the function's timeout.
 */
export const READ_HERE_BUDGET_MS = 30_000;

/**
 * Works the run's open steps here until none is left, this instance's slot is taken by another of
 * its messages (which reads on itself once its step is done), or the budget (for starting a step)
 * is spent. Nothing else changes: each step is claimed and recorded as always, and every step's
 * message is on the queue as always, so an instance that takes a copy first simply wins the claim,
 * and a crash here leaves the run to those copies. A step is tried once per call; one that must
 * wait (a claim won elsewhere in between, Braze's export not ready) is passed over: its message
 * carries it.
 */
async function readStepsHere(deps: ConnectorDeps, runId: string, budgetMs: number): Promise<void> {
  if (budgetMs <= 0) return;
  const until = deps.clock.now() + budgetMs;
  const tried = new Set<string>();
  try {
    while (deps.clock.now() < until) {
      // Another of this instance's messages works a step: it reads on itself once done.
      if (!deps.readerSlots.free) return;
      const run = await deps.runs.get(runId);
      if (!run || isTerminal(run.status) || run.status === 'queued' || run.status === 'finalizing' || run.enqueueDone || run.shards === 0) return;
      const open = (await openSteps(deps, run)).filter((s) => !tried.has(`${s.kind}-${s.index}`));
      if (open.length === 0) return;
      // A random one: instances reading on side by side then seldom race for the same claim.
      const step = open[Math.floor(Math.random() * open.length)];
      tried.add(`${step.kind}-${step.index}`);
      await runStep(deps, runId, step.kind, step.index);
    }
  } catch (error) {
    // The run is not hurt: its steps' messages carry it. Failing the message would only send them again.
    deps.log.warn(`run ${runId}: reading here stopped (${describeError(error)}); the queue carries the rest`);
  }
}
