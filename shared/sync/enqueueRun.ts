import { findDestination, type DestinationConfig } from '../config/syncConfig';
import { describeError, ExportNotReadyError, InvalidInputError, LeaseLostError } from '../errors';
import { dataPointsOf, describeIdentifier, identifierFromKey } from '../mapping/profileIdentity';
import { BatchPacker } from '../queue/batchPacker';
import { rejectCsvLine, type RejectLine } from '../runs/rejectsReport';
import { candidateBlobName, deleteWorkingBlobs, inputRejectsPartName, newToken } from '../runs/runBlobs';
import { isTerminal, statusAfter, type RunRecord } from '../runs/runRecord';
import { BlobLineWriter } from '../storage/blobLineWriter';
import { changeAttributes, diffProfile } from '../state/diff';
import { isStateRecord, NdjsonWriter, readNdjson, stateRecordSchema, type ProfileState } from '../state/deliveredState';
import { MembershipBits } from '../state/membershipBits';
import { fieldsFingerprint, keyHash, ProfileIndex } from '../state/profileIndex';
import type { ConnectorDeps } from './deps';
import { readExportKeys, readExportRows } from './exportRows';
import { finalizeRun, requestFinalizeIfComplete } from './finalizeRun';
import { holdingLease, leaseEnd, leaseHeld } from './lease';
import { readSources, sourceNames } from './runSources';

export type RunStepResult = { kind: 'done' } | { kind: 'deferred'; delayMs: number; reason: string };

/** How often the row loop looks at its lease: often enough to stop within a moment, rarely enough to cost nothing. */
const LEASE_CHECK_ROWS = 1024;

/**
 * Reads a run's refresh, diffs it against what Braze last accepted, and enqueues the changes as
 * batch messages. Safe to run twice: batch ids are deterministic (a batch already settled is
 * recognised when it arrives again), counts are set, not added, and a lease keeps two enqueuers
 * from working at once. Its working blobs carry its lease token, so a loser's writes never count.
 */
export async function enqueueRun(deps: ConnectorDeps, runId: string): Promise<RunStepResult> {
  const run = await deps.runs.get(runId);
  if (!run) {
    deps.log.warn(`run ${runId} does not exist; message dropped`);
    return { kind: 'done' };
  }
  if (isTerminal(run.status) || run.status === 'finalizing' || run.enqueueDone) return { kind: 'done' };
  const now = deps.clock.now();
  if (leaseHeld(run, now)) {
    return { kind: 'deferred', delayMs: Date.parse(run.leaseUntil!) - now + 1_000, reason: `run ${runId} is being enqueued by another worker` };
  }
  const waiting = await claimDestination(deps, run);
  if (waiting) return waiting;

  const owner = newToken();
  const startedMs = deps.clock.now();
  const leased = await deps.runs.update(runId, (current) => {
    if (isTerminal(current.status) || current.status === 'finalizing' || current.enqueueDone) return undefined;
    if (leaseHeld(current, deps.clock.now())) return undefined;
    // A halted or stalled run keeps its status while its enqueue goes on (or starts again).
    return { event: 'startEnqueue', leaseOwner: owner, leaseUntil: leaseEnd(deps) };
  });
  if (!leased.changed) return { kind: 'done' };

  try {
    const destination = findDestination(deps.config, run.destination, run.instance);
    if (!destination) throw new InvalidInputError(`destination "${run.destination}" is no longer in the mapping config`);
    const seen = { rowsRead: 0 };
    const totals = await holdingLease(
      deps,
      runId,
      owner,
      (signal) => diffAndEnqueue(deps, leased.run, destination, owner, signal, seen),
      () => ({ rowsReadSoFar: seen.rowsRead }),
    );
    const { run: enqueued } = await deps.runs.update(runId, (current) =>
      current.leaseOwner === owner
        ? {
            ...totals,
            rowsReadSoFar: totals.rowsRead,
            enqueueDone: true,
            enqueuedBy: owner,
            event: 'enqueueDone',
            leaseOwner: undefined,
            leaseUntil: undefined,
          }
        : undefined,
    );
    // Not ours unless our write landed (a retried write whose first answer was lost finds it done already).
    if (enqueued.enqueuedBy !== owner || !enqueued.enqueueDone) throw new LeaseLostError(`run ${runId}: lease lost just before the enqueue was recorded`);
    deps.log.info(
      `run ${runId}: read ${totals.rowsRead} rows; ${totals.usersEnqueued} profiles to send (${totals.exitsEnqueued} leaving), ${totals.rowsSkippedUnchanged} rows unchanged, ${totals.rowsRejectedInput} rejected; ${totals.batchesEnqueued} batches`,
    );
    deps.log.record({
      connectorEvent: 'RunEnqueued',
      runId,
      destination: run.destination,
      rowsRead: totals.rowsRead,
      rowsUnchanged: totals.rowsSkippedUnchanged,
      rowsRejected: totals.rowsRejectedInput,
      profilesEnqueued: totals.usersEnqueued,
      exits: totals.exitsEnqueued,
      batches: totals.batchesEnqueued,
      durationMs: deps.clock.now() - startedMs,
    });
    // The last batch may have been recorded before enqueueDone was set: whoever writes last asks.
    if (enqueued.usersEnqueued === 0) await finalizeRun(deps, runId);
    else await requestFinalizeIfComplete(deps, runId);
    return { kind: 'done' };
  } catch (error) {
    if (error instanceof InvalidInputError || error instanceof ExportNotReadyError) {
      deps.log.error(`run ${runId} failed: ${describeError(error)}`);
      const failed = await deps.runs.update(runId, (current) =>
        current.leaseOwner === owner
          ? { event: 'fail', error: error.message, finishedAt: new Date(deps.clock.now()).toISOString(), leaseOwner: undefined, leaseUntil: undefined }
          : undefined,
      );
      if (failed.changed) {
        deps.log.record({ connectorEvent: 'RunFailed', runId, destination: run.destination, reason: error.message });
        await deps.destinations.release(run.modelJsonPath, runId);
        await deleteWorkingBlobs(deps.storage.stateContainer, runId);
      }
      return { kind: 'done' };
    }
    await deps.runs
      .update(runId, (current) => (current.leaseOwner === owner ? { event: 'releaseEnqueue', leaseOwner: undefined, leaseUntil: undefined } : undefined))
      .catch(() => undefined);
    throw error;
  }
}

/**
 * One run at a time per export destination, so each diff starts from the state the previous run
 * left. A run that cannot finish by itself (halted on bad credentials, stalled) is superseded:
 * the newer snapshot re-sends whatever it missed.
 */
async function claimDestination(deps: ConnectorDeps, run: RunRecord): Promise<RunStepResult | undefined> {
  const lock = await deps.destinations.activeRun(run.modelJsonPath);
  if (lock?.runId === run.runId) return undefined;
  if (lock) {
    const other = await deps.runs.get(lock.runId);
    if (other && !isTerminal(other.status)) {
      if (!statusAfter(other.status, 'supersede')) {
        return { kind: 'deferred', delayMs: 15_000, reason: `waiting for run ${other.runId} of the same destination to finish` };
      }
      const superseded = await deps.runs.update(other.runId, (current) =>
        statusAfter(current.status, 'supersede')
          ? { event: 'supersede', supersededBy: run.runId, finishedAt: new Date(deps.clock.now()).toISOString(), leaseOwner: undefined, leaseUntil: undefined }
          : undefined,
      );
      if (superseded.changed) {
        // Its parked profiles will never be sent by it: they count as failed (the newer run covers them).
        const { rowsParked, usersParked } = superseded.run;
        await deps.runs.adjustCounters(other.runId, { rowsFailed: rowsParked, usersFailed: usersParked, rowsParked: -rowsParked, usersParked: -usersParked });
        await deleteWorkingBlobs(deps.storage.stateContainer, other.runId);
        deps.log.warn(`run ${other.runId} was ${other.status}; superseded by ${run.runId}, which sends the newer snapshot instead`);
        deps.log.record({
          connectorEvent: 'RunSuperseded',
          runId: other.runId,
          destination: other.destination,
          supersededBy: run.runId,
          previousStatus: other.status,
        });
      }
    }
  }
  const claimed = await deps.destinations.claim(run.modelJsonPath, run.runId, lock);
  return claimed ? undefined : { kind: 'deferred', delayMs: 2_000, reason: 'another run claimed the destination first' };
}

type EnqueueTotals = Pick<
  RunRecord,
  | 'rowsRead'
  | 'rowsRejectedInput'
  | 'rowsSkippedUnchanged'
  | 'rowsEnqueued'
  | 'usersEnqueued'
  | 'exitsEnqueued'
  | 'batchesEnqueued'
  | 'dataPointsFullSend'
  | 'inputRejectedByReason'
>;

async function diffAndEnqueue(
  deps: ConnectorDeps,
  run: RunRecord,
  destination: DestinationConfig,
  owner: string,
  signal: AbortSignal,
  seen: { rowsRead: number },
): Promise<EnqueueTotals> {
  const segments = await readSources(deps, run);
  const container = deps.storage.exportContainer;
  const state = deps.storage.stateContainer;
  const bits = new MembershipBits(segments.map((s) => s.attribute));
  const segmentBits = segments.map((s) => bits.bit(s.attribute));
  const sources = await sourceNames(deps, run);
  const leaverValue = destination.leaverValue;

  const startedMs = deps.clock.now();
  const phases: string[] = [];
  const phaseDone = (name: string) => phases.push(`${name} ${((deps.clock.now() - startedMs) / 1000).toFixed(1)} s`);
  const pointer = await deps.destinations.statePointer(run.modelJsonPath);
  const index = new ProfileIndex((pointer?.profiles ?? 0) + 1024);
  if (pointer) {
    for await (const record of readNdjson(state, pointer.blobName, stateRecordSchema, isStateRecord))
      index.setPrevious(record.h, bits.maskOf(record.m), record.f);
  }

  phaseDone('state loaded');
  // Pass 1 learns who is in which segment, so a profile in several becomes one object. It can skip
  // the largest segment: pass 2 reads that one first and learns its memberships as it goes.
  const bySize = segments.map((s, i) => ({ i, bytes: s.partitions.reduce((n, p) => n + p.sizeBytes, 0) })).sort((a, b) => b.bytes - a.bytes || a.i - b.i);
  const sendingOrder = bySize.map((s) => s.i);
  let keysRead = 0;
  for await (const row of readExportKeys(container, segments, destination, sendingOrder.slice(1))) {
    if (++keysRead % LEASE_CHECK_ROWS === 0) signal.throwIfAborted();
    if (row.result.ok) index.addMembership(keyHash(row.result.value), segmentBits[row.segmentIndex]);
  }

  phaseDone('memberships read');
  const totals: EnqueueTotals = {
    rowsRead: 0,
    rowsRejectedInput: 0,
    rowsSkippedUnchanged: 0,
    rowsEnqueued: 0,
    usersEnqueued: 0,
    exitsEnqueued: 0,
    batchesEnqueued: 0,
    dataPointsFullSend: 0,
    inputRejectedByReason: '{}',
  };
  const reasons: Record<string, number> = {};
  const rejects = new BlobLineWriter(state, inputRejectsPartName(run.runId, owner), 'text/csv; charset=utf-8');
  const reject = async (line: RejectLine, reason: string) => {
    await rejects.writeLine(rejectCsvLine(line).slice(0, -1));
    if (line.outcome === 'rejected') reasons[reason] = (reasons[reason] ?? 0) + 1;
  };
  const packer = new BatchPacker(deps.storage.batchQueue, run.runId);
  const candidate = new NdjsonWriter(state, candidateBlobName(run.runId, owner));
  const stateOf = (memberships: number, fingerprint: string): ProfileState | null => {
    const m = bits.namesOf(memberships);
    return m.length ? { m, f: fingerprint } : null;
  };

  try {
    // Pass 2: each profile's first row decides what to send; its rows in other segments travel with it.
    for await (const row of readExportRows(container, segments, destination, sendingOrder)) {
      totals.rowsRead += 1;
      if (totals.rowsRead % LEASE_CHECK_ROWS === 0) {
        signal.throwIfAborted();
        seen.rowsRead = totals.rowsRead;
      }
      const source = sources[row.partitionIndex];
      if (!row.result.ok) {
        totals.rowsRejectedInput += 1;
        await reject({ outcome: 'rejected', source, row: row.row, identifier: '', reason: row.result.reason }, reasonKey(row.result.reason));
        continue;
      }
      const profile = row.result.value.profile;
      const hash = keyHash(profile.key);
      const bit = segmentBits[row.segmentIndex];
      index.addMembership(hash, bit);
      if (!index.claimRow(hash, bit)) {
        totals.rowsRejectedInput += 1;
        const reason = 'duplicate: the segment has another row of this profile (its values were sent)';
        await reject({ outcome: 'rejected', source, row: row.row, identifier: describeIdentifier(profile.identifier), reason }, reason);
        continue;
      }
      for (const issue of profile.fieldIssues) {
        await reject({ outcome: 'field_dropped', source, row: row.row, identifier: describeIdentifier(profile.identifier), reason: issue }, '');
      }
      if (!index.markEmitted(hash)) continue;
      const slot = index.get(hash)!;
      const fingerprint = fieldsFingerprint(profile.fields);
      totals.dataPointsFullSend += dataPointsOf(profile.fields) + bits.namesOf(slot.currentMemberships & bits.syncedMask).length;
      const fieldsChanged = !index.sameFingerprint(hash, fingerprint);
      const change = diffProfile(
        { hasPrevious: slot.hasPrevious, previousMemberships: slot.previousMemberships, currentMemberships: slot.currentMemberships, fieldsChanged },
        bits.syncedMask,
        run.force,
      );
      const carried = (slot.previousMemberships & ~bits.syncedMask) >>> 0;
      const next = stateOf((slot.currentMemberships & bits.syncedMask) | carried, fingerprint);
      if (change.unchanged) {
        // Nothing is sent, so the next state is the current one whatever happens: no previous needed.
        totals.rowsSkippedUnchanged += slot.rows;
        await candidate.writeCandidate({ h: hash, k: profile.key, n: next, p: null });
        continue;
      }
      const previous = slot.hasPrevious ? stateOf(slot.previousMemberships, slot.previousFingerprint) : null;
      const attributes = changeAttributes(change, profile.fields, (mask) => bits.namesOf(mask), leaverValue);
      await candidate.writeCandidate({ h: hash, k: profile.key, n: next, p: previous, b: packer.currentBatchId });
      await packer.add({ hash, identifier: profile.identifier, attributes, rows: slot.rows, source: { partition: row.partitionIndex, row: row.row } });
      totals.rowsEnqueued += slot.rows;
      totals.usersEnqueued += 1;
    }

    phaseDone('rows mapped and diffed');
    // Pass 3: profiles Braze has as members that this refresh no longer lists have left.
    if (pointer) {
      for await (const record of readNdjson(state, pointer.blobName, stateRecordSchema, isStateRecord)) {
        signal.throwIfAborted();
        const slot = index.get(record.h);
        if (slot?.seen) continue;
        const memberships = bits.maskOf(record.m);
        const leave = (memberships & bits.syncedMask) >>> 0;
        const kept = stateOf((memberships & ~bits.syncedMask) >>> 0, record.f);
        if (leave === 0) {
          await candidate.writeCandidate({ h: record.h, k: record.k, n: kept, p: { m: record.m, f: record.f } });
          continue;
        }
        const attributes = changeAttributes({ unchanged: false, sendFields: false, join: 0, leave }, {}, (mask) => bits.namesOf(mask), leaverValue);
        await candidate.writeCandidate({ h: record.h, k: record.k, n: kept, p: { m: record.m, f: record.f }, b: packer.currentBatchId });
        await packer.add({ hash: record.h, identifier: identifierFromKey(record.k), attributes, rows: 0, source: 'leaver' });
        totals.usersEnqueued += 1;
        totals.exitsEnqueued += 1;
      }
    }
    await packer.close();
    signal.throwIfAborted();
    await candidate.close();
    await rejects.close();
    phaseDone('leavers found, all enqueued');
  } catch (error) {
    // Nothing of an enqueue that did not finish is committed.
    await candidate.abort(error);
    await rejects.abort(error);
    throw error;
  }
  totals.batchesEnqueued = packer.messages;
  totals.inputRejectedByReason = JSON.stringify(reasons);
  deps.log.info(`run ${run.runId}: enqueue timing: ${phases.join(', ')}`);
  return totals;
}

/** Groups reasons that carry numbers ("expected 5 columns, found 4") under one key for the counts. */
function reasonKey(reason: string): string {
  return reason.replace(/\d+/g, 'N').replace(/: .*$/, '');
}
