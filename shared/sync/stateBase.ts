import { z } from 'zod';
import type { StatePointer } from '../runs/destinationStore';
import { isTerminal, type RunRecord } from '../runs/runRecord';
import { readPreviousState, type PreviousState } from '../state/deliveredState';
import type { ConnectorDeps } from '../runs/connectorDeps';

/** What a run records of the destination's state pointer when it is planned (run.stateBase). */
const stateBaseSchema = z
  .object({
    blobName: z.string().min(1),
    format: z.number().int().optional(),
    runId: z.string().min(1),
    profiles: z.number().int().min(0),
  })
  .nullable();
type StateBase = z.output<typeof stateBaseSchema>;

export function stateBaseText(pointer: StatePointer | undefined): string {
  const base: StateBase = pointer ? { blobName: pointer.blobName, format: pointer.format, runId: pointer.runId, profiles: pointer.profiles } : null;
  return JSON.stringify(base);
}

function parseStateBase(run: Pick<RunRecord, 'stateBase' | 'runId'>): StateBase | undefined {
  if (run.stateBase === undefined) return undefined;
  const parsed = stateBaseSchema.safeParse(JSON.parse(run.stateBase));
  if (!parsed.success) throw new Error(`run ${run.runId}: its recorded state base is not one (${parsed.error.issues[0]?.message})`);
  return parsed.data;
}

/** Profiles the state a run diffs against holds (0 when none, or for a run planned by an older version). */
export function stateBaseProfiles(run: Pick<RunRecord, 'stateBase' | 'runId'>): number {
  return parseStateBase(run)?.profiles ?? 0;
}

/**
 * The delivered state a run diffs against: the one its plan recorded. A run planned by an older
 * version recorded none and reads the pointer (it holds the destination, so the pointer is still
 * the one it was planned on).
 */
export async function runStateBase(deps: ConnectorDeps, run: RunRecord): Promise<PreviousState> {
  const base = parseStateBase(run);
  const pointer = base === undefined ? await deps.destinations.statePointer(run.modelJsonPath) : (base ?? undefined);
  return readPreviousState(deps.storage.stateContainer, pointer);
}

/**
 * Whether a run's state folder may still be read by a run that holds no lock: a dry run of the
 * destination that diffs against it, or that has not recorded its base yet (it may read the
 * pointer at any moment, and could read it just before it moves). Runs that hold the lock read the
 * state only after the run before them released it, so they never read a replaced state.
 */
export async function stateStillRead(deps: ConnectorDeps, modelJsonPath: string, stateRunId: string): Promise<boolean> {
  for (const run of await deps.runs.listRuns()) {
    if (!run.dryRun || run.modelJsonPath !== modelJsonPath || isTerminal(run.status)) continue;
    const base = parseStateBase(run);
    if (base === undefined || base?.runId === stateRunId) return true;
  }
  return false;
}
