import { createHash } from 'node:crypto';
import { odata, type TableClient, type TableEntity, type TransactionAction } from '@azure/data-tables';
import { runRecordSchema, type RunCounts, type RunRecord } from './runRecord';

const RUN_ROW = 'run';
const LOCK_PARTITION = 'destination-locks';
const STATE_PARTITION = 'delivered-state';

/** Which blob holds a destination's delivered state, and which run wrote it. */
export interface StatePointer {
  blobName: string;
  runId: string;
  runCreatedAt: string;
  profiles: number;
  etag?: string;
}
const MAX_CONFLICT_RETRIES = 200;

/**
 * Many senders update one run entity. After a lost ETag race, wait a random, growing moment
 * (capped at 200 ms) so the contenders spread out instead of colliding again at once.
 */
function conflictPause(attempt: number): Promise<void> {
  const ceilingMs = Math.min(200, 5 * 2 ** Math.min(attempt, 6));
  return new Promise((resolve) => setTimeout(resolve, Math.random() * ceilingMs));
}

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

const outcomeCounters = Object.keys(emptyOutcome()).filter((k) => k !== 'rejectedByReason') as (keyof Omit<BatchOutcome, 'rejectedByReason'>)[];

function statusOf(error: unknown): number | undefined {
  return (error as { statusCode?: number }).statusCode;
}

function isConflict(error: unknown): boolean {
  const status = statusOf(error);
  return status === 409 || status === 412;
}

/** The shape of the ids runIdFor makes; anything else is not a run of ours. */
export function isRunId(id: string): boolean {
  return /^[rf]-[0-9a-f]{24}(-[0-9a-z]+)?$/.test(id);
}

/** Run id of a refresh: the same refresh always maps to the same run, so overlapping triggers meet. */
export function runIdFor(modelJsonPath: string, refreshKey: string, force: boolean, nonce?: string): string {
  const hash = createHash('sha256').update(`${modelJsonPath}\n${refreshKey}`).digest('hex').slice(0, 24);
  return force ? `f-${hash}-${nonce ?? Date.now().toString(36)}` : `r-${hash}`;
}

/**
 * Run records in a table. Every write is conditional (ETag or insert-if-absent), so concurrent
 * triggers and senders neither lose an update nor count one twice.
 */
export class RunLedger {
  constructor(private readonly table: TableClient) {}

  async get(runId: string): Promise<RunRecord | undefined> {
    const entities: Record<string, unknown>[] = [];
    // odata`` quotes the id: it can come from an HTTP route.
    const filter = odata`PartitionKey eq ${runId} and (RowKey eq ${RUN_ROW} or (RowKey ge ${SHARD_PREFIX} and RowKey lt ${SHARD_END}))`;
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) entities.push(entity);
    return assemble(entities);
  }

  /** Inserts the run if no run with this id exists; answers the stored one either way. */
  async create(run: Omit<RunRecord, 'etag'>): Promise<{ created: boolean; run: RunRecord }> {
    try {
      await this.table.createEntity(toEntity(run));
      return { created: true, run: (await this.get(run.runId))! };
    } catch (error) {
      if (statusOf(error) !== 409) throw error;
      return { created: false, run: (await this.get(run.runId))! };
    }
  }

  /**
   * Read-modify-write with the ETag. `change` sees the current record and answers the fields to
   * change, or undefined to leave it alone.
   */
  async update(runId: string, change: (run: RunRecord) => Partial<RunRecord> | undefined): Promise<{ run: RunRecord; changed: boolean }> {
    for (let attempt = 0; attempt < MAX_CONFLICT_RETRIES; attempt++) {
      const run = await this.get(runId);
      if (!run) throw new Error(`run ${runId} does not exist`);
      const patch = change(run);
      if (!patch) return { run, changed: false };
      const next = { ...run, ...patch, updatedAt: new Date().toISOString() };
      try {
        await this.table.updateEntity(toEntity(next), 'Replace', { etag: run.etag });
        return { run: (await this.get(runId))!, changed: true };
      } catch (error) {
        if (!isConflict(error)) throw error;
        await conflictPause(attempt);
      }
    }
    throw new Error(`run ${runId}: too many concurrent updates`);
  }

  /**
   * Records what a batch message achieved, atomically with one of the run's counter shards (one
   * table transaction). A batch already recorded as fully ended is not counted again, so a duplicated or
   * replayed message changes nothing; one that failed or was parked before can be recorded again
   * after a resume, and only the difference is added.
   */
  async recordBatch(
    runId: string,
    batchId: string,
    outcome: BatchOutcome,
    hint: { firstDelivery?: boolean } = {},
  ): Promise<{ applied: boolean; run: RunRecord }> {
    const rowKey = `batch-${batchId}`;
    const shardKey = shardOf(batchId);
    let assumeNew = hint.firstDelivery ?? false;
    for (let attempt = 0; attempt < MAX_CONFLICT_RETRIES; attempt++) {
      const [previous, shard] = await Promise.all([assumeNew ? undefined : this.entity(runId, rowKey), this.entity(runId, shardKey)]);
      assumeNew = false;
      const old = previous ? outcomeOf(previous) : emptyOutcome();
      if (previous && old.usersFailed + old.usersParked === 0) return { applied: false, run: (await this.get(runId))! };
      const counts = shard ? outcomeOf(shard) : emptyOutcome();
      const next = addOutcome(addOutcome(counts, old, -1), outcome, 1);
      const outcomeEntity = { partitionKey: runId, rowKey, ...outcome, rejectedByReason: JSON.stringify(outcome.rejectedByReason) };
      const shardEntity = { partitionKey: runId, rowKey: shardKey, ...next, rejectedByReason: JSON.stringify(next.rejectedByReason) };
      const actions: TransactionAction[] = [
        previous ? ['update', outcomeEntity, 'Replace', { etag: previous.etag }] : ['create', outcomeEntity],
        shard ? ['update', shardEntity, 'Replace', { etag: shard.etag }] : ['create', shardEntity],
      ];
      try {
        await this.table.submitTransaction(actions);
        return { applied: true, run: (await this.get(runId))! };
      } catch (error) {
        if (!isConflict(error) && !isTransactionConflict(error)) throw error;
        await conflictPause(attempt);
      }
    }
    throw new Error(`run ${runId}: too many concurrent batch updates`);
  }

  /** Moves counts between buckets outside any batch (a superseded run's parked profiles become failed). */
  async adjustCounters(runId: string, delta: Partial<Omit<BatchOutcome, 'rejectedByReason'>>): Promise<void> {
    const adjustment = { ...emptyOutcome(), ...delta };
    for (let attempt = 0; attempt < MAX_CONFLICT_RETRIES; attempt++) {
      const shard = await this.entity(runId, ADJUSTMENT_SHARD);
      const next = addOutcome(shard ? outcomeOf(shard) : emptyOutcome(), adjustment, 1, true);
      const entity = { partitionKey: runId, rowKey: ADJUSTMENT_SHARD, ...next, rejectedByReason: JSON.stringify(next.rejectedByReason) };
      try {
        if (shard) await this.table.updateEntity(entity, 'Replace', { etag: shard.etag });
        else await this.table.createEntity(entity);
        return;
      } catch (error) {
        if (!isConflict(error)) throw error;
        await conflictPause(attempt);
      }
    }
    throw new Error(`run ${runId}: too many concurrent counter adjustments`);
  }

  private async entity(partitionKey: string, rowKey: string): Promise<(Record<string, unknown> & { etag?: string }) | undefined> {
    try {
      return await this.table.getEntity<Record<string, unknown>>(partitionKey, rowKey);
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** A batch already recorded as fully ended (nothing failed or parked): a replay has nothing to do. */
  async isBatchSettled(runId: string, batchId: string): Promise<boolean> {
    const outcome = await this.getBatchOutcome(runId, batchId);
    return outcome !== undefined && outcome.usersFailed + outcome.usersParked === 0;
  }

  async getBatchOutcome(runId: string, batchId: string): Promise<BatchOutcome | undefined> {
    try {
      return outcomeOf(await this.table.getEntity<Record<string, unknown>>(runId, `batch-${batchId}`));
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** The run that currently owns a destination's delivered state, if any. */
  async activeRun(modelJsonPath: string): Promise<{ runId: string; etag?: string } | undefined> {
    try {
      const lock = await this.table.getEntity<{ runId: string }>(LOCK_PARTITION, lockKey(modelJsonPath));
      return { runId: lock.runId, etag: lock.etag };
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** Takes the destination for a run; false when another write got there first. */
  async claimDestination(modelJsonPath: string, runId: string, expected: { etag?: string } | undefined): Promise<boolean> {
    const entity = { partitionKey: LOCK_PARTITION, rowKey: lockKey(modelJsonPath), runId };
    try {
      if (expected?.etag) await this.table.updateEntity(entity, 'Replace', { etag: expected.etag });
      else await this.table.createEntity(entity);
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw error;
    }
  }

  async releaseDestination(modelJsonPath: string, runId: string): Promise<void> {
    const lock = await this.activeRun(modelJsonPath);
    if (!lock || lock.runId !== runId) return;
    try {
      await this.table.deleteEntity(LOCK_PARTITION, lockKey(modelJsonPath), { etag: lock.etag });
    } catch (error) {
      if (!isConflict(error) && statusOf(error) !== 404) throw error;
    }
  }

  async statePointer(modelJsonPath: string): Promise<StatePointer | undefined> {
    try {
      const entity = await this.table.getEntity<Omit<StatePointer, 'etag'>>(STATE_PARTITION, lockKey(modelJsonPath));
      return { blobName: entity.blobName, runId: entity.runId, runCreatedAt: entity.runCreatedAt, profiles: Number(entity.profiles), etag: entity.etag };
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /**
   * Points the destination at a new state blob, unless a run that started later already wrote
   * one: an old run finishing late must not roll the state back.
   */
  async switchStatePointer(modelJsonPath: string, next: Omit<StatePointer, 'etag'>): Promise<{ switched: boolean; previous?: StatePointer }> {
    for (let attempt = 0; attempt < MAX_CONFLICT_RETRIES; attempt++) {
      const previous = await this.statePointer(modelJsonPath);
      if (previous && previous.runId !== next.runId && previous.runCreatedAt > next.runCreatedAt) return { switched: false, previous };
      const entity = { partitionKey: STATE_PARTITION, rowKey: lockKey(modelJsonPath), ...next };
      try {
        if (previous) await this.table.updateEntity(entity, 'Replace', { etag: previous.etag });
        else await this.table.createEntity(entity);
        return { switched: true, previous };
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
    throw new Error('delivered state: too many concurrent updates');
  }

  /** Every run with its counts, newest first (one entity per run plus its counter shards). */
  async listRuns(): Promise<RunRecord[]> {
    const byRun = new Map<string, Record<string, unknown>[]>();
    const filter = odata`RowKey eq ${RUN_ROW} or (RowKey ge ${SHARD_PREFIX} and RowKey lt ${SHARD_END})`;
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
      const runId = String(entity.partitionKey);
      const list = byRun.get(runId) ?? [];
      list.push(entity);
      byRun.set(runId, list);
    }
    const runs = [...byRun.values()].map(assemble).filter((r): r is RunRecord => r !== undefined);
    return runs.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }
}

function isTransactionConflict(error: unknown): boolean {
  const text = String((error as Error).message ?? '');
  return /UpdateConditionNotSatisfied|EntityAlreadyExists|ConditionNotMet|412|409/.test(text);
}

function lockKey(modelJsonPath: string): string {
  return createHash('sha256').update(modelJsonPath).digest('hex').slice(0, 32);
}

/** The run entity plus the sum of its counter shards, as one record. */
function assemble(entities: Record<string, unknown>[]): RunRecord | undefined {
  const runEntity = entities.find((e) => e.rowKey === RUN_ROW);
  if (!runEntity) return undefined;
  let delivery = emptyOutcome();
  for (const shard of entities) if (shard !== runEntity) delivery = addOutcome(delivery, outcomeOf(shard), 1);
  const inputReasons = JSON.parse(String(runEntity.inputRejectedByReason ?? '{}')) as Record<string, number>;
  const reasons = { ...inputReasons };
  for (const [reason, n] of Object.entries(delivery.rejectedByReason)) reasons[reason] = (reasons[reason] ?? 0) + n;
  const { rejectedByReason: _braze, ...counters } = delivery;
  return runRecordSchema.parse({ ...runEntity, ...counters, rejectedByReason: JSON.stringify(reasons), etag: runEntity.etag });
}

function addOutcome(base: BatchOutcome, delta: BatchOutcome, sign: 1 | -1, allowNegative = false): BatchOutcome {
  const sum = emptyOutcome();
  for (const name of outcomeCounters) sum[name] = base[name] + sign * delta[name];
  if (!allowNegative) for (const name of outcomeCounters) sum[name] = Math.max(0, sum[name]);
  const reasons = { ...base.rejectedByReason };
  for (const [reason, n] of Object.entries(delta.rejectedByReason)) reasons[reason] = (reasons[reason] ?? 0) + sign * n;
  for (const reason of Object.keys(reasons)) if (reasons[reason] === 0 || (!allowNegative && reasons[reason] < 0)) delete reasons[reason];
  sum.rejectedByReason = reasons;
  return sum;
}

/**
 * Delivery counts live in counter shards beside the run entity: a batch's transaction touches its
 * own outcome and one of 16 shards, so hundreds of concurrent senders do not queue on one ETag.
 */
const SHARD_PREFIX = 'counters-';
const SHARD_END = 'counters.';
const COUNTER_SHARDS = 16;
const ADJUSTMENT_SHARD = `${SHARD_PREFIX}adjust`;

function shardOf(batchId: string): string {
  const n = createHash('md5').update(batchId).digest().readUInt32BE(0) % COUNTER_SHARDS;
  return `${SHARD_PREFIX}${String(n).padStart(2, '0')}`;
}

function outcomeOf(entity: Record<string, unknown>): BatchOutcome {
  const outcome = emptyOutcome();
  for (const name of outcomeCounters) outcome[name] = Number(entity[name] ?? 0);
  outcome.rejectedByReason = JSON.parse(String(entity.rejectedByReason ?? '{}')) as Record<string, number>;
  return outcome;
}

/** The run entity holds what the run itself writes; delivery counts and Braze's reasons live in the shards. */
function toEntity(run: Omit<RunRecord, 'etag'> & { etag?: string }): TableEntity<Record<string, unknown>> {
  const { etag: _etag, rejectedByReason: _merged, ...fields } = run;
  const entity: TableEntity<Record<string, unknown>> = { partitionKey: run.runId, rowKey: RUN_ROW };
  const delivery = new Set<string>(outcomeCounters);
  for (const [name, value] of Object.entries(fields)) if (value !== undefined && !delivery.has(name)) entity[name] = value;
  return entity;
}
