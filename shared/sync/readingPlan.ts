import { encodeMessage, type RunMessage } from '../queue/messages';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { isTerminal, type RunRecord } from '../runs/runRecord';
import { partitionList, readSources } from '../runs/runSources';
import type { UnitKind, UnitRecord } from '../runs/unitLedger';
import { sendToQueue } from '../storage/queueSend';
import { completeReading } from './completeReading';

/** One step of a run's reading: a unit with a record, claimed before it works, done once. */
export interface StepRef {
  kind: UnitKind;
  index: number;
}

interface ReadingPhase {
  name: string;
  /** The phase's steps, given how many partitions and segments the refresh has. */
  steps: (run: RunRecord, partitions: number, segments: number) => StepRef[];
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * A run's reading, as the plan it is. A phase starts once every step of the one before is done;
 * the steps of a phase run side by side, on any instance, and know nothing of each other. After
 * the last, the reading completes (completeReading): totals summed, the guard passed or the run
 * held, the batches on the queue.
 */
export const readingPhases: readonly ReadingPhase[] = [
  {
    // Each partition read once, its rows routed to their shards (steps/mapStep); for a reconcile,
    // each segment's export asked of Braze and routed the same way (steps/exportStep).
    name: 'read',
    steps: (run, partitions, segments) => [
      ...range(partitions).map((index) => ({ kind: 'map' as const, index })),
      ...(run.reconcile ? range(segments).map((index) => ({ kind: 'export' as const, index })) : []),
    ],
  },
  {
    // Each shard diffed against its slice of the delivered state, or of Braze's exports (steps/shardStep).
    name: 'diff',
    steps: (run) => range(run.shards).map((index) => ({ kind: 'shard' as const, index })),
  },
];

/** The segments a reconcile asks Braze to export: all but the erasure table (last in the list), which is no Braze segment. */
function exportedSegments(segments: { erasure?: true }[]): number {
  return segments.filter((segment) => !segment.erasure).length;
}

export function stepMessage(runId: string, step: StepRef): RunMessage {
  if (step.kind === 'map') return { kind: 'mapPartition', runId, partition: step.index };
  if (step.kind === 'export') return { kind: 'exportSegment', runId, segment: step.index };
  return { kind: 'diffShard', runId, shard: step.index };
}

/** The steps of a phase that are not done yet, each with its unit's record when it has one. */
async function missingSteps(deps: ConnectorDeps, run: RunRecord, phase: ReadingPhase): Promise<(StepRef & { unit?: UnitRecord })[]> {
  const segments = await readSources(deps, run);
  const steps = phase.steps(run, partitionList(segments).length, exportedSegments(segments));
  const units = new Map<UnitKind, Map<number, UnitRecord>>();
  for (const kind of new Set(steps.map((s) => s.kind))) units.set(kind, new Map((await deps.units.list(run.runId, kind)).map((u) => [u.index, u])));
  return steps.map((step) => ({ ...step, unit: units.get(step.kind)!.get(step.index) })).filter((step) => step.unit?.state !== 'done');
}

/** Every step of the phase that `kind` belongs to is done. */
export async function phaseDone(deps: ConnectorDeps, run: RunRecord, kind: UnitKind): Promise<boolean> {
  const segments = await readSources(deps, run);
  const phase = readingPhases.find((p) => p.steps(run, partitionList(segments).length, exportedSegments(segments)).some((s) => s.kind === kind));
  return phase === undefined || (await missingSteps(deps, run, phase)).length === 0;
}

/**
 * The first phase that is not done — its number, counting from 1 — and its steps not done yet,
 * each with its unit's record when it has one; undefined once every phase is.
 */
async function nextPhase(deps: ConnectorDeps, run: RunRecord): Promise<{ number: number; steps: (StepRef & { unit?: UnitRecord })[] } | undefined> {
  for (const [i, phase] of readingPhases.entries()) {
    const missing = await missingSteps(deps, run, phase);
    if (missing.length > 0) return { number: i + 1, steps: missing };
  }
  return undefined;
}

const stepRef = ({ kind, index }: StepRef): StepRef => ({ kind, index });

/** The steps not done yet of the first phase that is not done; none once every phase is. */
export async function pendingSteps(deps: ConnectorDeps, run: RunRecord): Promise<StepRef[]> {
  return (await nextPhase(deps, run))?.steps.map(stepRef) ?? [];
}

/**
 * The pending steps no instance holds a live claim on: those an instance may take up without
 * their messages (a step whose worker died is open again once its claim runs out).
 */
export async function openSteps(deps: ConnectorDeps, run: RunRecord): Promise<StepRef[]> {
  const steps = (await nextPhase(deps, run))?.steps ?? [];
  const nowMs = deps.clock.now();
  return steps.filter(({ unit }) => !unit || Date.parse(unit.claimUntil) <= nowMs).map(stepRef);
}

/**
 * Moves a run's reading on: sends the steps of the first phase that is not done (those of it not
 * done yet: a copy of one that is running finds it claimed), or, once every phase is, completes it.
 * Once they are all sent the run records it (`phasesSent`). `unlessSent`: a late copy of a step
 * sends them only if no one recorded that — else every copy would send the whole phase again, and
 * copies are the rule when instances read on ahead of the messages (readHere). Sending before
 * recording means a sender that dies halfway leaves the phase to the next copy; the run's start
 * (a restart by the sweep) always sends.
 */
export async function advance(deps: ConnectorDeps, run: RunRecord, options: { unlessSent?: boolean } = {}): Promise<void> {
  const next = await nextPhase(deps, run);
  if (!next) return completeReading(deps, run);
  if (options.unlessSent && ((await deps.runs.get(run.runId))?.phasesSent ?? 0) >= next.number) return;
  for (const step of next.steps) await sendToQueue(deps.storage.runQueue, encodeMessage(stepMessage(run.runId, step)));
  await deps.runs.update(run.runId, (current) => (isTerminal(current.status) || current.phasesSent >= next.number ? undefined : { phasesSent: next.number }));
}
