import { atLine, readPartitionBatches, type PartitionColumns } from '../ci/partitionReader';
import { createKeyMapper } from '../mapping/rowMapper';
import { normalizesGuids } from '../mapping/customerId';
import { rejectCsvLine } from '../runs/rejectsReport';
import { mapOutputBlobName, mapRejectsPartName } from '../runs/runBlobs';
import type { RunRecord } from '../runs/runRecord';
import type { UnitTotals } from '../runs/unitLedger';
import { shardOfHash } from '../state/deliveredState';
import { keyHash } from '../state/profileIndex';
import { BlobLineWriter } from '../storage/blobLineWriter';
import { StagedBlobWriter } from '../storage/stagedBlobWriter';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { partitionList, readSources, runDestination } from '../runs/runSources';
import { canonicalColumns, identityHintText, mapLineText, mappingSeed, rawFingerprint } from './mapLines';
import { openPartition } from './openPartition';

/** Memory the shard writers of one reading step may buffer together before they stage a block. */
const MAP_BUFFER_BYTES = 16 * 1024 * 1024;

/** The block each of a step's per-shard writers stages: together they buffer about MAP_BUFFER_BYTES. */
export function shardBlockBytes(shards: number): number {
  return Math.min(1024 * 1024, Math.max(64 * 1024, Math.floor(MAP_BUFFER_BYTES / shards)));
}

/**
 * Groups reasons that carry numbers ("external_id longer than N characters") under one key for the
 * counts. A row's column count goes under what is wrong: its two numbers folded alike ("expected N
 * columns, found N") read as if the row had the columns expected.
 */
export function reasonKey(reason: string): string {
  if (/^expected \d+ columns, found \d+$/.test(reason)) return 'wrong number of columns';
  return reason.replace(/\d+/g, 'N').replace(/: .*$/, '');
}

/**
 * A map step: reads one partition once and routes each row to the shard its profile key hashes
 * to, as a compact line (key hash, segment, source, raw-value fingerprint, raw values). Rows
 * without a usable identifier, or that cannot be read, are rejected here with their reason.
 * Per-row work is synchronous; the step awaits once per parser batch. Every blob it writes
 * carries its owner token, so the output of a step that lost its claim never counts.
 */
export async function mapPartition(
  deps: ConnectorDeps,
  run: RunRecord,
  partitionIndex: number,
  owner: string,
  signal: AbortSignal,
  /** identityHints: leave them for rows keyed by external_id that carry an e-mail (see wantsIdentityHints). */
  options: { identityHints: boolean } = { identityHints: true },
): Promise<UnitTotals> {
  const segments = await readSources(deps, run);
  const destination = runDestination(deps, run);
  const { segmentIndex, partition } = partitionList(segments)[partitionIndex];
  const segment = segments[segmentIndex];
  const shards = run.shards;
  if (shards < 1) throw new Error(`run ${run.runId}: partition ${partitionIndex} mapped before the run was planned`);
  const state = deps.storage.stateContainer;
  const blockBytes = shardBlockBytes(shards);
  const outputs = Array.from(
    { length: shards },
    (_, s) => new StagedBlobWriter(state.getBlockBlobClient(mapOutputBlobName(run.runId, partitionIndex, owner, s)), blockBytes),
  );
  const rejects = new BlobLineWriter(state, mapRejectsPartName(run.runId, partitionIndex, owner), 'text/csv; charset=utf-8');
  const totals: UnitTotals = { ...emptyTotals() };
  const seed = mappingSeed(destination, segment);
  const identityOptions = { normalizeGuids: normalizesGuids(destination, segments) };
  const wanted = canonicalColumns(destination);
  let keyOf: ReturnType<typeof createKeyMapper> | undefined;
  let picks: number[] = [];
  const onColumns = (columns: PartitionColumns) => {
    keyOf = createKeyMapper(destination, columns, identityOptions);
    picks = wanted.map((column) => columns.indexOf.get(column) ?? -1);
  };
  const reject = (row: number, line: number, reason: string) => {
    totals.rowsRejectedInput += 1;
    const key = reasonKey(reason);
    totals.rejectedByReason[key] = (totals.rejectedByReason[key] ?? 0) + 1;
    return rejects.writeLine(
      rejectCsvLine({ outcome: 'rejected', source: partition.blobName, row, identifier: '', reason: reason + atLine(line) }).slice(0, -1),
    );
  };

  try {
    const body = await openPartition(deps.storage.exportContainer, partition);
    for await (const batch of readPartitionBatches(body, partition.format, segment.attributes, onColumns, partition.blobName)) {
      signal.throwIfAborted();
      const pending: Promise<void>[] = [];
      for (const record of batch) {
        totals.rowsRead += 1;
        if (record.kind === 'invalid') {
          pending.push(reject(record.row, record.line, record.reason));
          continue;
        }
        const identity = keyOf!(record.values);
        if (!identity.ok) {
          pending.push(reject(record.row, record.line, identity.reason));
          continue;
        }
        const hash = keyHash(identity.key);
        if (identity.key.charCodeAt(0) !== 120 /* x */) totals.rowsKeyedByFallback = (totals.rowsKeyedByFallback ?? 0) + 1;
        const values = picks.map((i) => (i >= 0 ? record.values[i] : ''));
        const valuesJson = JSON.stringify(values);
        outputs[shardOfHash(hash, shards)].write(
          mapLineText(hash, segmentIndex, partitionIndex, record.row, record.line, rawFingerprint(seed, valuesJson), valuesJson),
        );
        // An erasure row merges nothing: its user is deleted, and a merge into it could bring it back.
        if (options.identityHints && identity.emailKey && !segment.erasure) {
          const emailHash = keyHash(identity.emailKey);
          outputs[shardOfHash(emailHash, shards)].write(identityHintText(emailHash, segmentIndex, JSON.stringify(identity.key.slice(2))));
        }
      }
      for (const output of outputs) if (output.full) pending.push(output.flushIfFull());
      await Promise.all(pending);
    }
    signal.throwIfAborted();
    await Promise.all(outputs.map((output) => output.close()));
    await rejects.close();
  } catch (error) {
    await rejects.abort(error);
    throw error;
  }
  return totals;
}

export function emptyTotals(): UnitTotals {
  return {
    rowsRead: 0,
    rowsRejectedInput: 0,
    rowsSkippedUnchanged: 0,
    rowsEnqueued: 0,
    usersEnqueued: 0,
    exitsEnqueued: 0,
    erasuresEnqueued: 0,
    batchesEnqueued: 0,
    dataPointsFullSend: 0,
    rejectedByReason: {},
    profiles: 0,
  };
}
