import { createHash } from 'node:crypto';
import type { TableClient, TableEntity, TransactionAction } from '@azure/data-tables';
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
const MAX_CONFLICT_RETRIES = 50;

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
    try {
      const entity = await this.table.getEntity<Record<string, unknown>>(runId, RUN_ROW);
      return runRecordSchema.parse({ ...entity, etag: entity.etag });
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
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
      }
    }
    throw new Error(`run ${runId}: too many concurrent updates`);
  }

  /**
   * Records what a batch message achieved, atomically with the run's counters (one table
   * transaction). A batch already recorded as fully ended is not counted again, so a duplicated or
   * replayed message changes nothing; one that failed or was parked before can be recorded again
   * after a resume, and only the difference is added.
   */
  async recordBatch(
    runId: string,
    batchId: string,
    outcome: BatchOutcome,
    hint: { run?: RunRecord; firstDelivery?: boolean } = {},
  ): Promise<{ applied: boolean; run: RunRecord }> {
    const rowKey = `batch-${batchId}`;
    // First try on what the caller already read; a conflict falls back to reading everything fresh.
    let known = hint.run;
    let assumeNew = hint.firstDelivery ?? false;
    for (let attempt = 0; attempt < MAX_CONFLICT_RETRIES; attempt++) {
      const run = known ?? (await this.get(runId));
      known = undefined;
      if (!run) throw new Error(`run ${runId} does not exist`);
      let previous: (Record<string, unknown> & { etag?: string }) | undefined;
      if (!assumeNew) {
        try {
          previous = await this.table.getEntity<Record<string, unknown>>(runId, rowKey);
        } catch (error) {
          if (statusOf(error) !== 404) throw error;
        }
      }
      assumeNew = false;
      const old = previous ? outcomeOf(previous) : emptyOutcome();
      if (previous && old.usersFailed + old.usersParked === 0) return { applied: false, run };
      const next: RunRecord = { ...run, updatedAt: new Date().toISOString() };
      for (const name of outcomeCounters) next[name] = Math.max(0, run[name] + outcome[name] - old[name]);
      const reasons = JSON.parse(run.rejectedByReason) as Record<string, number>;
      for (const [reason, n] of Object.entries(old.rejectedByReason)) reasons[reason] = (reasons[reason] ?? 0) - n;
      for (const [reason, n] of Object.entries(outcome.rejectedByReason)) reasons[reason] = (reasons[reason] ?? 0) + n;
      for (const reason of Object.keys(reasons)) if (reasons[reason] <= 0) delete reasons[reason];
      next.rejectedByReason = JSON.stringify(reasons);
      const outcomeEntity = { partitionKey: runId, rowKey, ...outcome, rejectedByReason: JSON.stringify(outcome.rejectedByReason) };
      const actions: TransactionAction[] = [
        previous ? ['update', outcomeEntity, 'Replace', { etag: previous.etag }] : ['create', outcomeEntity],
        ['update', toEntity(next), 'Replace', { etag: run.etag }],
      ];
      try {
        const response = await this.table.submitTransaction(actions);
        return { applied: true, run: { ...next, etag: response.getResponseForEntity(RUN_ROW)?.etag } };
      } catch (error) {
        if (!isConflict(error) && !isTransactionConflict(error)) throw error;
      }
    }
    throw new Error(`run ${runId}: too many concurrent batch updates`);
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

  /** Every run, newest first (small: one entity per run). */
  async listRuns(): Promise<RunRecord[]> {
    const runs: RunRecord[] = [];
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter: `RowKey eq '${RUN_ROW}'` } })) {
      runs.push(runRecordSchema.parse({ ...entity, etag: entity.etag }));
    }
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

function outcomeOf(entity: Record<string, unknown>): BatchOutcome {
  const outcome = emptyOutcome();
  for (const name of outcomeCounters) outcome[name] = Number(entity[name] ?? 0);
  outcome.rejectedByReason = JSON.parse(String(entity.rejectedByReason ?? '{}')) as Record<string, number>;
  return outcome;
}

function toEntity(run: Omit<RunRecord, 'etag'> & { etag?: string }): TableEntity<Record<string, unknown>> {
  const { etag: _etag, ...fields } = run;
  const entity: TableEntity<Record<string, unknown>> = { partitionKey: run.runId, rowKey: RUN_ROW };
  for (const [name, value] of Object.entries(fields)) if (value !== undefined) entity[name] = value;
  return entity;
}
