import { encodeMessage } from '../queue/messages';
import { isTerminal, statusAfter } from '../runs/runRecord';
import { deleteRunFolder } from '../runs/runBlobs';
import { isRunId } from '../runs/runStore';
import { destinationKey } from '../state/deliveredState';
import { deleteBlobsUnder } from '../storage/blobFolders';
import { stateStillRead } from './stateBase';
import { wakeWaiting } from './claimDestination';
import { sendToQueue } from '../storage/queueSend';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { isRunComplete } from './finalizeRun';
import { leaseHeld } from './lease';
import { announceOwed, owe, sendOwedNotices } from './notify';
import type { ConnectorRecord } from '../telemetry';

/** A run whose enqueue has not finished, with no lease and no change for this long, lost its message (a crash between insert and send). */
const STALE_MS = 5 * 60_000;

export interface SweepOutcome {
  /** Runs whose enqueue was started again. */
  restarted: string[];
  /** Complete runs whose finalize request was sent again. */
  finalizing: string[];
  /** Runs just marked stalled, with how long they had made no progress. */
  stalled: { runId: string; quietMinutes: number }[];
  /** Ended runs older than RUN_RETENTION_DAYS, removed with their blobs. */
  expired: string[];
  /** Runs whose delivered-state folder was deleted: neither the destination's state nor read by anyone. */
  statesDeleted: string[];
  /** Ended runs that still held their destination, which is now free. */
  locksFreed: string[];
  /** Runs whose owed notifications were queued (their worker had not). */
  notified: string[];
}

/**
 * Picks up runs a crash or a lost message left behind, every timer tick: one whose last batch was
 * recorded but whose finalize message was lost, one whose enqueuer died, and one that waits for
 * batches that no longer come (lost on a poison queue, a failed poison handler): it becomes
 * `stalled`, which a resume or a newer refresh of the destination gets out of.
 */
export async function sweepRuns(deps: ConnectorDeps): Promise<SweepOutcome> {
  const outcome: SweepOutcome = { restarted: [], finalizing: [], stalled: [], expired: [], statesDeleted: [], locksFreed: [], notified: [] };
  const now = deps.clock.now();
  // A superseded run whose deliveries are still to be re-sent keeps its record and blobs until they are.
  const uncertain = await deps.destinations.uncertainRuns();
  for (const run of await deps.runs.listRuns()) {
    // A notification its status change owes and its worker did not queue (it died, the queue refused).
    if (run.owedNotices && (await sendOwedNotices(deps, run, now))) outcome.notified.push(run.runId);
    if (isTerminal(run.status) && now - Date.parse(run.finishedAt ?? run.updatedAt) > deps.settings.runRetentionMs && !uncertain.has(run.runId)) {
      // The blobs first: a sweep interrupted here finds the run again next time.
      await deleteRunFolder(deps.storage.stateContainer, run.runId);
      await deps.runs.deleteRun(run.runId);
      outcome.expired.push(run.runId);
      deps.log.record({ connectorEvent: 'RunExpired', runId: run.runId, destination: run.destination });
      continue;
    }
    // Halted and held runs wait for a person, not for the sweep.
    // Held runs, and halted runs whose reading is done, wait for a person; a halted run still reading
    // goes on reading (and is restarted like any other if its messages were lost).
    if (isTerminal(run.status) || run.status === 'held' || (run.status === 'halted' && run.enqueueDone)) continue;
    if (isRunComplete(run)) {
      if (statusAfter(run.status, 'startFinalize') && !(run.status === 'finalizing' && leaseHeld(run, now))) {
        await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'finalizeRun', runId: run.runId }));
        outcome.finalizing.push(run.runId);
      }
      continue;
    }
    if (!run.enqueueDone) {
      // A step still working (a long diff step renews its claim, not the run) is no crash.
      if (!leaseHeld(run, now) && now - Date.parse(run.updatedAt) > STALE_MS && !(await stepWorking(deps, run.runId, now))) {
        await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'startRun', runId: run.runId }));
        outcome.restarted.push(run.runId);
      }
      continue;
    }
    const quietMs = now - Date.parse(run.lastProgressAt ?? run.updatedAt);
    if (run.status === 'sending' && quietMs > deps.settings.runStallMs) {
      const minutes = Math.floor(quietMs / 60_000);
      let record: ConnectorRecord | undefined;
      const { changed, run: stalled } = await deps.runs.update(run.runId, (current) => {
        const status = statusAfter(current.status, 'stall');
        if (!status) return undefined;
        const pending = current.usersEnqueued - current.usersDelivered - current.usersRejected - current.usersFailed;
        record = {
          connectorEvent: 'RunStalled',
          runId: run.runId,
          destination: current.destination,
          quietMinutes: minutes,
          profilesPending: pending,
          reason: `no batch ended for ${minutes} minutes`,
        };
        return {
          event: 'stall',
          error: `no batch ended for ${minutes} minutes while ${pending} profiles are pending. POST /api/runs/${run.runId}/resume enqueues its batches again (those that ended are skipped); a newer refresh of the destination supersedes it.`,
          ...owe(deps, current, status, record),
        };
      });
      if (changed) {
        outcome.stalled.push({ runId: run.runId, quietMinutes: minutes });
        deps.log.error(`run ${run.runId} stalled: no batch ended for ${minutes} minutes`);
        await announceOwed(deps, stalled, record!);
      }
    }
  }
  outcome.locksFreed = await freeLocksOfEndedRuns(deps);
  outcome.statesDeleted = await sweepStateFolders(deps);
  return outcome;
}

/**
 * A run that ended (completed, failed, cancelled, superseded — or expired) but still holds its
 * destination: a worker died between ending it and freeing the destination. Nothing would free it
 * but this, and the runs waiting for it would wait for their next look.
 */
async function freeLocksOfEndedRuns(deps: ConnectorDeps): Promise<string[]> {
  const freed: string[] = [];
  for (const lock of await deps.destinations.heldLocks()) {
    const run = await deps.runs.get(lock.runId);
    if (run && !isTerminal(run.status)) continue;
    if (!(await deps.destinations.releaseByKey(lock.key, lock.runId))) continue;
    freed.push(lock.runId);
    deps.log.warn(`sweep: run ${lock.runId} ended without freeing its destination; freed`);
    if (run) await wakeWaiting(deps, run.modelJsonPath);
  }
  return freed;
}

/** Whether any step of the run (map, export, diff) holds a live claim. */
async function stepWorking(deps: ConnectorDeps, runId: string, now: number): Promise<boolean> {
  for (const kind of ['map', 'export', 'shard'] as const) {
    if ((await deps.units.list(runId, kind)).some((u) => u.state === 'working' && Date.parse(u.claimUntil) > now)) return true;
  }
  return false;
}

/**
 * Deletes the state folders (`state/<destination>/<run>/`, profile keys and e-mails) nothing needs:
 * a run's that ended without its state becoming the destination's, or whose state was replaced while
 * a dry run still read it, or that a crash left behind. Kept: the destination's current state, the
 * folder of a run that has not ended (it may still write or finalize), one a dry run may read, and
 * a superseded run's whose deliveries a later run has yet to re-send.
 * The order of the reads matters: a run's record (ended?) before the pointer and the lock's uncertain
 * run (a finalizer moves the pointer, and a claimer marks a run uncertain, before that run ends), and
 * the pointer before the dry runs (one that read a pointer before it moved is listed by then).
 */
export async function sweepStateFolders(deps: ConnectorDeps): Promise<string[]> {
  const container = deps.storage.stateContainer;
  const candidates: { key: string; runId: string; modelJsonPath?: string }[] = [];
  for await (const destination of container.listBlobsByHierarchy('/', { prefix: 'state/' })) {
    if (destination.kind !== 'prefix') continue;
    for await (const folder of container.listBlobsByHierarchy('/', { prefix: destination.name })) {
      if (folder.kind !== 'prefix') continue;
      const runId = folder.name.slice(destination.name.length).replace(/\/$/, '');
      if (!isRunId(runId)) continue;
      const run = await deps.runs.get(runId);
      if (run && !isTerminal(run.status)) continue;
      candidates.push({ key: destination.name.slice('state/'.length).replace(/\/$/, ''), runId, modelJsonPath: run?.modelJsonPath });
    }
  }
  // Read after the runs: a run is marked uncertain on the lock before it is superseded (ends).
  const uncertain = await deps.destinations.uncertainRuns();
  const unpointed = [];
  for (const candidate of candidates) {
    if (uncertain.has(candidate.runId)) continue;
    const pointer = await deps.destinations.statePointerOfKey(candidate.key);
    if (pointer?.runId !== candidate.runId) unpointed.push(candidate);
  }
  const deleted: string[] = [];
  for (const candidate of unpointed) {
    if (candidate.modelJsonPath && (await stateStillRead(deps, candidate.modelJsonPath, candidate.runId))) continue;
    if (!candidate.modelJsonPath && (await anyDryRunReading(deps, candidate.key))) continue;
    const blobs = await deleteBlobsUnder(container, `state/${candidate.key}/${candidate.runId}/`);
    if (blobs > 0) {
      deleted.push(candidate.runId);
      deps.log.info(`sweep: deleted the delivered-state folder of run ${candidate.runId} (${blobs} blobs): no longer the destination's state`);
    }
  }
  return deleted;
}

/** A run expired with its record: whether a dry run of the destination its folder belongs to is under way (then keep it). */
async function anyDryRunReading(deps: ConnectorDeps, key: string): Promise<boolean> {
  return (await deps.runs.listRuns()).some((run) => run.dryRun && !isTerminal(run.status) && destinationKey(run.modelJsonPath) === key);
}
