import { createHash } from 'node:crypto';
import type { RunCounts } from './runRecord';

/**
 * Layout of the runs table. A run's own entity lives in partition `<runId>`; its batches live in
 * 16 partitions `<runId>~00` … `<runId>~15`, each holding the records of the batches hashed to it
 * and one counter entity that sums them. A batch's record and its counter change in one entity
 * group transaction (same partition), and concurrent senders spread over 16 partitions instead of
 * queuing on one: Azure's scalability target is about 2,000 entities per second per partition.
 */
export const RUN_ROW = 'run';
export const COUNTERS_ROW = 'counters';
export const BATCH_ROW_PREFIX = 'batch-';
const SHARDS = 16;
/** Sorts after every character a run id or shard number contains. */
const SHARD_SEPARATOR = '~';

export function shardPartition(runId: string, batchId: string): string {
  const n = createHash('md5').update(batchId).digest().readUInt32BE(0) % SHARDS;
  return `${runId}${SHARD_SEPARATOR}${String(n).padStart(2, '0')}`;
}

/** The run a partition belongs to (its own, or one of its shards). */
export function runIdOfPartition(partitionKey: string): string {
  const at = partitionKey.indexOf(SHARD_SEPARATOR);
  return at < 0 ? partitionKey : partitionKey.slice(0, at);
}

/** The bounds of a run's shard partitions, for range queries. */
export function shardRange(runId: string): { from: string; to: string } {
  return { from: `${runId}${SHARD_SEPARATOR}`, to: `${runId}${SHARD_SEPARATOR}${SHARD_SEPARATOR}` };
}

export function batchRow(batchId: string): string {
  return `${BATCH_ROW_PREFIX}${batchId}`;
}

/** What a batch achieved, in the run's counters. */
export type BatchOutcome = Pick<
  RunCounts,
  | 'usersDelivered'
  | 'usersRejected'
  | 'usersFailed'
  | 'usersParked'
  | 'rowsDelivered'
  | 'rowsRejectedBraze'
  | 'rowsFailed'
  | 'rowsParked'
  | 'brazeRequests'
  | 'dataPointsSent'
> & { rejectedByReason: Record<string, number> };

export const emptyOutcome = (): BatchOutcome => ({
  usersDelivered: 0,
  usersRejected: 0,
  usersFailed: 0,
  usersParked: 0,
  rowsDelivered: 0,
  rowsRejectedBraze: 0,
  rowsFailed: 0,
  rowsParked: 0,
  brazeRequests: 0,
  dataPointsSent: 0,
  rejectedByReason: {},
});

export const outcomeCounters = Object.keys(emptyOutcome()).filter((k) => k !== 'rejectedByReason') as (keyof Omit<BatchOutcome, 'rejectedByReason'>)[];

/** `base + sign × delta`, reason by reason; reasons that reach zero disappear. */
export function addOutcome(base: BatchOutcome, delta: BatchOutcome, sign: 1 | -1): BatchOutcome {
  const sum = emptyOutcome();
  for (const name of outcomeCounters) sum[name] = base[name] + sign * delta[name];
  const reasons = { ...base.rejectedByReason };
  for (const [reason, n] of Object.entries(delta.rejectedByReason)) reasons[reason] = (reasons[reason] ?? 0) + sign * n;
  for (const reason of Object.keys(reasons)) if (reasons[reason] === 0) delete reasons[reason];
  sum.rejectedByReason = reasons;
  return sum;
}

export function outcomeOf(entity: Record<string, unknown>): BatchOutcome {
  const outcome = emptyOutcome();
  for (const name of outcomeCounters) outcome[name] = Number(entity[name] ?? 0);
  outcome.rejectedByReason = JSON.parse(String(entity.rejectedByReason ?? '{}')) as Record<string, number>;
  return outcome;
}

export function outcomeProperties(outcome: BatchOutcome): Record<string, number | string> {
  const { rejectedByReason, ...counters } = outcome;
  return { ...counters, rejectedByReason: JSON.stringify(rejectedByReason) };
}

export function isEmptyOutcome(outcome: BatchOutcome): boolean {
  return outcomeCounters.every((name) => outcome[name] === 0) && Object.keys(outcome.rejectedByReason).length === 0;
}
