import { encodeMessage } from '../queue/messages';
import { deleteWorkingBlobs } from '../runs/runBlobs';
import { sendToQueue } from '../storage/queueSend';
import { isOlderRefresh, isSameRefreshTime, isTerminal, refreshTimeOf, statusAfter, type RunRecord } from '../runs/runRecord';
import type { StatePointer } from '../runs/destinationStore';
import { deleteStateFolder } from '../state/deliveredState';
import type { ConnectorDeps } from '../runs/connectorDeps';

export type ClaimOutcome =
  | { kind: 'claimed'; run: RunRecord }
  /** Another run holds the destination and must finish (or be superseded) first. */
  | { kind: 'wait'; delayMs: number; reason: string }
  /** This run must not send: a newer snapshot is in Braze or on its way. It has ended `superseded`. */
  | { kind: 'superseded'; reason: string };

/**
 * One run at a time per export destination, so each diff starts from the state the previous run
 * left — and the newest snapshot wins, whatever order the runs arrive in:
 * - a run older than the one holding the destination, or than the snapshot Braze already holds,
 *   ends `superseded` with the reason and sends nothing (unless forced: then its status says so);
 * - a run that cannot finish by itself (halted, stalled, never started) is superseded by a newer
 *   one, and the lock is taken only if that supersede applied — a run that moved on meanwhile
 *   (a late batch finished it, an operator resumed it) keeps the destination;
 * - the run that takes the destination supersedes the queued runs of older refreshes.
 */
export async function claimDestination(deps: ConnectorDeps, run: RunRecord): Promise<ClaimOutcome> {
  const path = run.modelJsonPath;
  let lock = await deps.destinations.lock(path);
  // Claimed already: a worker that died after the claim may have left what follows it undone —
  // the generation written but the delivered snapshot not yet looked at — so all of it is done again
  // (each part is a no-op once done). Returning at a written generation sent an older snapshot over
  // the delivered one when the worker had died in between.
  if (lock.runId === run.runId) return afterClaim(deps, run, lock.generation, lock.uncertainRun, undefined);
  const uncertainBefore = lock.uncertainRun;
  if (lock.runId) {
    const holder = await deps.runs.get(lock.runId);
    if (holder && !isTerminal(holder.status)) {
      if (!run.force && isOlderRefresh(run, holder)) {
        const reason = `refresh ${run.refreshLabel} is older than refresh ${holder.refreshLabel}, which run ${holder.runId} is syncing; an older snapshot is never sent over a newer one (POST /api/sync with {"force": true} sends it on purpose)`;
        return endSuperseded(deps, run, holder.runId, reason);
      }
      // Only a newer snapshot takes over (a re-upload of the same refresh waits for the first).
      // The holder's end (completed, failed, cancelled, held, halted) wakes the runs waiting for it:
      // this look back is only the safety net, and rare while the holder waits for a person.
      if (!statusAfter(holder.status, 'supersede') || isSameRefreshTime(run, holder))
        return {
          kind: 'wait',
          delayMs: holder.status === 'held' || holder.status === 'halted' || holder.status === 'stalled' ? 10 * 60_000 : 60_000,
          reason: `waiting for run ${holder.runId} (${holder.status}) of the same destination to finish`,
        };
      if (mayHaveDelivered(holder)) {
        // What it sent is re-sent in full by this run: all of it must be known first — its reading
        // done (a halt outlives it), and no sender of it still under way.
        if (!holder.enqueueDone)
          return { kind: 'wait', delayMs: 5_000, reason: `run ${holder.runId} is ${holder.status} while it still reads; superseded once its reading is done` };
        const sendingUntil = await deps.batches.sendingUntil(holder.runId, deps.clock.now());
        if (sendingUntil !== undefined)
          return { kind: 'wait', delayMs: sendingUntil - deps.clock.now() + 1_000, reason: `a sender of run ${holder.runId} may still be sending` };
        // Recorded on the lock before the supersede: whoever claims next — this run, or another
        // after this one died — takes over what the holder may have delivered.
        const marked = await deps.destinations.markUncertain(path, lock, holder.runId);
        if (!marked) return { kind: 'wait', delayMs: 1_000, reason: 'the destination lock changed meanwhile' };
        lock = marked;
      }
      const applied = await supersedeRun(deps, holder, run.runId, `superseded by run ${run.runId}, which sends refresh ${run.refreshLabel} instead`);
      // The holder moved on between the read and the supersede: it keeps the destination.
      if (!applied) return { kind: 'wait', delayMs: 2_000, reason: `run ${holder.runId} moved on before it could be superseded` };
    }
  }
  const generation = await deps.destinations.claim(path, run.runId, lock);
  if (generation === undefined) return { kind: 'wait', delayMs: 2_000, reason: 'another run claimed the destination first' };
  return afterClaim(deps, run, generation, lock.uncertainRun, uncertainBefore);
}

/**
 * What a run does once it holds the destination (again, if it died right after claiming): records
 * its generation and what it takes over, refuses to send a snapshot older than the delivered one,
 * and supersedes the queued runs of older refreshes.
 */
async function afterClaim(
  deps: ConnectorDeps,
  run: RunRecord,
  generation: number,
  uncertainRun: string | undefined,
  uncertainBefore: string | undefined,
): Promise<ClaimOutcome> {
  const path = run.modelJsonPath;
  // The holder this run superseded re-sent everything the run uncertain before it may have
  // delivered (it took that one over, and finished its reading): that run's blobs can go.
  if (uncertainBefore && uncertainRun !== uncertainBefore) await deleteRunBlobs(deps, path, uncertainBefore);
  let { run: claimed } = await deps.runs.update(run.runId, (current) =>
    current.generation === generation && current.takesOver === uncertainRun ? undefined : { generation, takesOver: uncertainRun },
  );

  const pointer = await deps.destinations.statePointer(path);
  if (pointer && pointer.runId !== run.runId) {
    const delivered = await deliveredSnapshot(deps, pointer);
    if (isOlderRefresh(run, delivered)) {
      const what = `refresh ${run.refreshLabel} is older than refresh ${delivered.refreshLabel}, which run ${pointer.runId} delivered`;
      if (!run.force) {
        const outcome = await endSuperseded(
          deps,
          claimed,
          pointer.runId,
          `${what}; an older snapshot is never sent over a newer one (POST /api/sync with {"force": true} sends it on purpose)`,
        );
        await deps.destinations.release(path, run.runId);
        await wakeWaiting(deps, path);
        return outcome;
      }
      const note = `${what}: sent anyway, as forced — Braze now holds this older snapshot`;
      deps.log.warn(`run ${run.runId}: ${note}`);
      ({ run: claimed } = await deps.runs.update(run.runId, (current) => (current.olderThanDelivered ? undefined : { olderThanDelivered: note })));
    }
  }
  await supersedeQueuedOlder(deps, claimed);
  return { kind: 'claimed', run: claimed };
}

/**
 * The destination is free, or its holder now waits for a person: the runs queued for it try now,
 * not at their next look (a waiting run checks back every minute, or ten while the holder waits
 * for a person; back-to-back refreshes should not wait for that).
 */
export async function wakeWaiting(deps: ConnectorDeps, modelJsonPath: string): Promise<void> {
  for (const run of await deps.runs.listRuns()) {
    if (run.modelJsonPath !== modelJsonPath || run.status !== 'queued' || run.dryRun) continue;
    await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'startRun', runId: run.runId }));
  }
}

/** The snapshot a state pointer names: its time from the pointer, or from its run's record for a pointer of an older version. */
async function deliveredSnapshot(deps: ConnectorDeps, pointer: StatePointer): Promise<Pick<RunRecord, 'refreshTime' | 'refreshLabel'>> {
  if (pointer.refreshTime) return { refreshTime: pointer.refreshTime, refreshLabel: pointer.refreshLabel ?? pointer.refreshTime };
  const writer = await deps.runs.get(pointer.runId);
  return { refreshTime: writer ? refreshTimeOf(writer) : '', refreshLabel: writer?.refreshLabel ?? 'of unknown time' };
}

/** Queued runs of older refreshes of the destination would only send what this run replaces. */
async function supersedeQueuedOlder(deps: ConnectorDeps, run: RunRecord): Promise<void> {
  for (const other of await deps.runs.listRuns()) {
    if (other.modelJsonPath !== run.modelJsonPath || other.runId === run.runId || other.status !== 'queued') continue;
    if (other.dryRun || other.force || !isOlderRefresh(other, run)) continue;
    await supersedeRun(deps, other, run.runId, `superseded by run ${run.runId}, which sends the newer refresh ${run.refreshLabel}`);
  }
}

async function endSuperseded(deps: ConnectorDeps, run: RunRecord, by: string, reason: string): Promise<ClaimOutcome> {
  await supersedeRun(deps, run, by, reason);
  return { kind: 'superseded', reason };
}

/**
 * A run superseded while sending (halted, stalled) may have delivered part of its snapshot; one
 * superseded before it sent (queued, held) delivered nothing.
 */
function mayHaveDelivered(run: RunRecord): boolean {
  return !run.dryRun && (run.status === 'halted' || run.status === 'stalled');
}

/** What a run wrote that holds profile keys: its working blobs and its shards' states. */
export async function deleteRunBlobs(deps: ConnectorDeps, modelJsonPath: string, runId: string): Promise<void> {
  await deleteWorkingBlobs(deps.storage.stateContainer, runId);
  await deleteStateFolder(deps.storage.stateContainer, modelJsonPath, runId);
}

/**
 * Ends a run as superseded if its status allows it (the update is conditional: a run that moved on
 * meanwhile is left alone and false is answered). Its parked profiles count as failed — the newer
 * run covers them — and what it wrote (working blobs, its shards' states) is deleted.
 */
export async function supersedeRun(deps: ConnectorDeps, victim: RunRecord, by: string, reason: string): Promise<boolean> {
  // Only from the status it was judged in: a run that moved on (approved, then halted) is judged again.
  const superseded = await deps.runs.update(victim.runId, (current) =>
    current.status === victim.status && current.enqueueDone === victim.enqueueDone && statusAfter(current.status, 'supersede')
      ? {
          event: 'supersede',
          supersededBy: by,
          error: reason,
          finishedAt: new Date(deps.clock.now()).toISOString(),
          leaseOwner: undefined,
          leaseUntil: undefined,
        }
      : undefined,
  );
  if (!superseded.changed) return false;
  const previousStatus = victim.status;
  const { rowsParked, usersParked } = superseded.run;
  if (rowsParked || usersParked)
    await deps.runs.adjustCounters(victim.runId, { rowsFailed: rowsParked, usersFailed: usersParked, rowsParked: -rowsParked, usersParked: -usersParked });
  // What it sent (and the state it meant to write) is kept while it is the destination's uncertain
  // run: the run that supersedes it reads them to re-send those profiles in full.
  if (!mayHaveDelivered(victim)) await deleteRunBlobs(deps, victim.modelJsonPath, victim.runId);
  deps.log.warn(`run ${victim.runId} (${previousStatus}) superseded: ${reason}`);
  deps.log.record({ connectorEvent: 'RunSuperseded', runId: victim.runId, destination: victim.destination, supersededBy: by, previousStatus, reason });
  return true;
}
