import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { InvalidInputError } from '../errors';
import { encodeMessage } from '../queue/messages';
import { stagedBatchesName } from '../runs/runBlobs';
import { statusAfter, type RunRecord } from '../runs/runRecord';
import type { UnitRecord } from '../runs/unitLedger';
import { sendToQueue } from '../storage/queueSend';
import { isNotFound } from '../storage/storageErrors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { deleteRunBlobs, wakeWaiting } from './claimDestination';

const SENDS_IN_FLIGHT = 16;

/**
 * A guarded run's batches go to the queue: each shard's staged messages, as its diff step wrote
 * them. Safe to repeat (a crash halfway, a re-delivered step): every batch has an id and a record,
 * so a copy of one that was sent already is recognised and writes nothing.
 */
export async function releaseStaged(deps: ConnectorDeps, run: RunRecord, shardUnits: UnitRecord[]): Promise<number> {
  const container = deps.storage.stateContainer;
  let released = 0;
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  for (const unit of shardUnits) {
    let stream: Readable;
    try {
      stream = (await container.getBlobClient(stagedBatchesName(run.runId, unit.index, unit.owner)).download()).readableStreamBody as Readable;
    } catch (error) {
      if (!isNotFound(error)) throw error;
      // A shard with nothing to send may have written no messages; one that had some must find them.
      if ((unit.totals?.batchesEnqueued ?? 0) === 0) continue;
      throw new InvalidInputError(
        `the staged batches of shard ${unit.index} are gone (removed by hand, or by a storage lifecycle rule after a long hold): nothing more of this run can be sent as previewed; the next refresh reads everything again`,
      );
    }
    for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
      if (!line) continue;
      while (inFlight.size >= SENDS_IN_FLIGHT) await Promise.race(inFlight);
      if (failure) throw failure;
      const send: Promise<void> = sendToQueue(deps.storage.batchQueue, line)
        .catch((error: unknown) => {
          failure ??= error;
        })
        .finally(() => inFlight.delete(send));
      inFlight.add(send);
      released += 1;
    }
  }
  await Promise.all(inFlight);
  if (failure) throw failure;
  return released;
}

export type HeldRunOutcome =
  | { kind: 'approved'; runId: string; status: RunRecord['status'] }
  | { kind: 'cancelled'; runId: string; status: RunRecord['status'] }
  | { kind: 'notFound'; runId: string }
  /** The run is not held (any more); `reason` says what it is and what to do instead. */
  | { kind: 'refused'; runId: string; reason: string };

function notHeld(run: RunRecord): string {
  if (run.status === 'superseded') return `run ${run.runId} is not held: it was superseded by run ${run.supersededBy}, which sends the newer snapshot`;
  if (run.status === 'cancelled') return `run ${run.runId} is not held: it was cancelled`;
  if (run.approved) return `run ${run.runId} is not held: it was approved and is ${run.status}`;
  return `run ${run.runId} is not held (it is ${run.status}): only a run the guard held waits for approval`;
}

/**
 * A person has looked at a held run's preview and lets it send: it sends exactly the batches it
 * staged when it was held (its diff is not redone), and writes the delivered state as any run does.
 */
export async function approveRun(deps: ConnectorDeps, runId: string): Promise<HeldRunOutcome> {
  const run = await deps.runs.get(runId);
  if (!run) return { kind: 'notFound', runId };
  const { run: approved, changed } = await deps.runs.update(runId, (current) =>
    statusAfter(current.status, 'approve') ? { event: 'approve', approved: true } : undefined,
  );
  if (!changed) {
    // An approval whose worker failed after recording it, before the run's start was on the queue:
    // the run stays approved and enqueuing with nothing to move it, so approving again sends it.
    if (!(approved.approved && approved.status === 'enqueuing' && !approved.enqueueDone)) return { kind: 'refused', runId, reason: notHeld(approved) };
  } else {
    deps.log.info(`run ${runId} approved: it sends what it previewed`);
    deps.log.record({ connectorEvent: 'RunApproved', runId, destination: run.destination });
  }
  // The run's reading picks up where it was held: every step is done, so it releases its batches.
  await sendToQueue(deps.storage.runQueue, encodeMessage({ kind: 'startRun', runId }));
  return { kind: 'approved', runId, status: approved.status };
}

/** A person decides a held run must not send: it ends with nothing sent, and the delivered state stays as it was. */
export async function cancelRun(deps: ConnectorDeps, runId: string): Promise<HeldRunOutcome> {
  const run = await deps.runs.get(runId);
  if (!run) return { kind: 'notFound', runId };
  const { run: cancelled, changed } = await deps.runs.update(runId, (current) =>
    statusAfter(current.status, 'cancel')
      ? {
          event: 'cancel',
          finishedAt: new Date(deps.clock.now()).toISOString(),
          error: 'cancelled while held: nothing was sent, the delivered state is unchanged',
        }
      : undefined,
  );
  if (!changed) return { kind: 'refused', runId, reason: notHeld(cancelled) };
  await deps.destinations.release(run.modelJsonPath, runId);
  // Its staged batches, working blobs and the state it would have written hold profile keys: they go.
  await deleteRunBlobs(deps, run.modelJsonPath, runId);
  await wakeWaiting(deps, run.modelJsonPath);
  deps.log.warn(`run ${runId} cancelled while held: nothing was sent`);
  deps.log.record({ connectorEvent: 'RunCancelled', runId, destination: run.destination, previousStatus: run.status });
  return { kind: 'cancelled', runId, status: cancelled.status };
}
