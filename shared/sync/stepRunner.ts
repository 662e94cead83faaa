import { ExportNotReadyError, InvalidInputError } from '../errors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { newToken } from '../runs/runBlobs';
import { isTerminal, type RunRecord } from '../runs/runRecord';
import type { UnitKind, UnitTotals } from '../runs/unitLedger';
import { failRun } from './failRun';
import { finalizeIfReadingEnded } from './finalizeRun';
import { holdingUnit } from './lease';
import { advance, phaseDone } from './readingPlan';
import { READER_SLOT_RETRY_MS } from './readerSlots';
import type { RunStepResult } from './startRun';
import { exportStep } from './steps/exportStep';
import { mapStep } from './steps/mapStep';
import { shardStep } from './steps/shardStep';

/** What a step needs before it works: its inputs, or why it must come back later (holding no slot and no claim meanwhile). */
export type StepReadiness<Inputs> = { kind: 'ready'; inputs: Inputs } | { kind: 'wait'; delayMs: number; reason: string };

/** One kind of step of a run's reading: what it waits for, and its work. It knows nothing of the other steps or of the runner. */
export interface StepKind<Inputs> {
  kind: UnitKind;
  prepare(deps: ConnectorDeps, run: RunRecord, index: number): Promise<StepReadiness<Inputs>>;
  /** The work, while the step's claim is held (`signal` aborts when it is lost); nothing of it counts unless it finishes. */
  work(deps: ConnectorDeps, run: RunRecord, index: number, owner: string, inputs: Inputs, signal: AbortSignal): Promise<UnitTotals>;
}

const stepKinds: { [K in UnitKind]: StepKind<never> } = {
  map: mapStep as StepKind<never>,
  export: exportStep as StepKind<never>,
  shard: shardStep as StepKind<never>,
};

/**
 * Runs one step from its queue message, whatever its kind: waits for what it needs, takes one of
 * this instance's reading slots, claims the step's unit (a copy of the message that finds it
 * claimed comes back when the claim ends; one that finds it done moves the run on), works while
 * renewing the claim, records it done with its totals, marks the run's progress, and moves the
 * run on when its phase is done. Bad input fails the run with the reason.
 */
export async function runStep(deps: ConnectorDeps, runId: string, kind: UnitKind, index: number): Promise<RunStepResult> {
  const run = await deps.runs.get(runId);
  if (!run || isTerminal(run.status)) return { kind: 'done' };
  if (run.status === 'finalizing' || run.enqueueDone) {
    await finalizeIfReadingEnded(deps, run);
    return { kind: 'done' };
  }
  // A step exists only in its run's plan: a copy that comes before the run is planned (a stray,
  // a late duplicate) would read against no shards at all. The run's start sends its steps.
  if (run.status === 'queued' || run.shards === 0) {
    deps.log.info(`run ${runId}: ${kind} ${index} came before the run was planned; its start sends the steps`);
    return { kind: 'done' };
  }
  if ((await deps.units.read(runId, kind, index))?.state === 'done') {
    await advanceIfPhaseDone(deps, run, kind);
    return { kind: 'done' };
  }
  const step = stepKinds[kind];
  try {
    const readiness = await step.prepare(deps, run, index);
    if (readiness.kind === 'wait') return { kind: 'deferred', delayMs: readiness.delayMs, reason: `run ${runId}: ${readiness.reason}` };
    const release = await deps.readerSlots.take();
    if (!release)
      return {
        kind: 'deferred',
        delayMs: READER_SLOT_RETRY_MS + Math.floor(Math.random() * READER_SLOT_RETRY_MS),
        reason: `run ${runId}: this instance is reading another step`,
      };
    try {
      return await claimAndWork(deps, run, step, index, readiness.inputs);
    } finally {
      release();
    }
  } catch (error) {
    if (!(error instanceof InvalidInputError) && !(error instanceof ExportNotReadyError)) throw error;
    await failRun(deps, run, error);
    return { kind: 'done' };
  }
}

async function claimAndWork<Inputs>(deps: ConnectorDeps, run: RunRecord, step: StepKind<Inputs>, index: number, inputs: Inputs): Promise<RunStepResult> {
  const { runId } = run;
  const { kind } = step;
  const owner = newToken();
  const claim = await deps.units.claim(runId, kind, index, owner, deps.settings.leaseMs);
  if (claim.kind === 'busy')
    return { kind: 'deferred', delayMs: claim.untilMs - deps.clock.now() + 1_000, reason: `run ${runId}: ${kind} ${index} is being worked on` };
  if (claim.kind === 'done') {
    await advanceIfPhaseDone(deps, run, kind);
    return { kind: 'done' };
  }
  const startedMs = deps.clock.now();
  const worked = await holdingUnit(deps, runId, kind, index, owner, (signal) => step.work(deps, run, index, owner, inputs, signal));
  const endedMs = deps.clock.now();
  // A clock stepped back (an NTP correction) must not record a negative time.
  const totals: UnitTotals = { ...worked, workSeconds: Math.max(0, endedMs - startedMs) / 1000, endedAt: new Date(endedMs).toISOString() };
  // One line per step with its time: the run's timeline in the log, to see where a refresh waits.
  deps.log.info(`run ${runId}: ${kind} ${index} done in ${totals.workSeconds!.toFixed(2)} s`);
  if (!(await deps.units.finish(runId, kind, index, owner, totals))) {
    deps.log.warn(`run ${runId}: ${kind} ${index} was taken over while it worked; the other owner's result counts`);
    return { kind: 'done' };
  }
  await markProgress(deps, run, kind);
  // Only a step that finds its whole phase done moves the run on.
  if (await phaseDone(deps, run, kind)) await advance(deps, run);
  return { kind: 'done' };
}

/**
 * A copy of a step that finds it done moves the run on only once the step's whole phase is done
 * (its finisher may have died before doing so), and then only if the next phase's steps were not
 * all sent. Until then the phase's other steps have messages of their own; a copy re-sending them
 * all would multiply, copy after copy, when instances read ahead of the messages (readHere).
 */
async function advanceIfPhaseDone(deps: ConnectorDeps, run: RunRecord, kind: UnitKind): Promise<void> {
  if (await phaseDone(deps, run, kind)) await advance(deps, run, { unlessSent: true });
}

/** A finished step is progress (the sweep restarts only a run nothing happens to); a map step also says how far the reading is. */
async function markProgress(deps: ConnectorDeps, run: RunRecord, kind: UnitKind): Promise<void> {
  const rowsRead = kind === 'map' ? (await deps.units.list(run.runId, 'map')).reduce((n, u) => n + (u.totals?.rowsRead ?? 0), 0) : 0;
  await deps.runs.update(run.runId, (current) =>
    isTerminal(current.status) || current.enqueueDone ? undefined : current.rowsReadSoFar < rowsRead ? { rowsReadSoFar: rowsRead } : {},
  );
}
