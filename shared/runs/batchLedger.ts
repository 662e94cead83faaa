import { odata, type TableClient, type TransactionAction } from '@azure/data-tables';
import type { Clock } from '../clock';
import { isClosed, parseBatchRecord, type BatchRecord } from './batchRecord';
import { retryOnConflict } from '../storage/etagRetry';
import { isConflict } from '../storage/storageErrors';
import { readEntity } from '../storage/tableEntities';
import {
  addOutcome,
  BATCH_ROW_PREFIX,
  batchRow,
  COUNTERS_ROW,
  emptyOutcome,
  isEmptyOutcome,
  outcomeOf,
  outcomeProperties,
  shardPartition,
  shardRange,
} from './runTable';

export interface StoredBatch {
  record: BatchRecord;
  etag: string;
}

/**
 * Batch records and the run's counters (runTable.ts has the layout). A record and the counter it
 * adds to change in one transaction, so a batch's outcome is counted exactly when its state says so.
 */
export class BatchLedger {
  constructor(
    private readonly table: TableClient,
    private readonly clock: Clock,
  ) {}

  async read(runId: string, batchId: string): Promise<StoredBatch | undefined> {
    const entity = await readEntity<Record<string, unknown>>(this.table, shardPartition(runId, batchId), batchRow(batchId));
    return entity && { record: parseBatchRecord(entity, `batch ${batchId} of run ${runId}`), etag: entity.etag };
  }

  /**
   * Replaces the record seen as `previous` (or creates it, when there was none) with `next`, and
   * adds the difference of their outcomes to the run's counters. Answers the record as stored, or
   * undefined when someone else changed it first (the caller lost the batch). A write that landed
   * although its answer was lost (a dropped connection, retried) is recognised by its owner and
   * state, and counts as written.
   */
  async write(runId: string, batchId: string, previous: StoredBatch | undefined, next: BatchRecord): Promise<StoredBatch | undefined> {
    const partitionKey = shardPartition(runId, batchId);
    const delta = addOutcome(next.outcome, previous?.record.outcome ?? emptyOutcome(), -1);
    const entity = {
      partitionKey,
      rowKey: batchRow(batchId),
      state: next.state,
      owner: next.owner,
      claimUntil: next.claimUntil,
      ...(next.handoff ? { handoff: JSON.stringify(next.handoff) } : {}),
      ...outcomeProperties(next.outcome),
    };
    const landed = (now: StoredBatch | undefined): StoredBatch | undefined =>
      now !== undefined && now.record.owner === next.owner && now.record.state === next.state ? now : undefined;
    const stored = async (etag: string | undefined): Promise<StoredBatch | undefined> =>
      etag ? { record: next, etag } : landed(await this.read(runId, batchId));
    // A claim changes no counts: one conditional write. Endings and hand-offs also move the run's counters.
    const touchesCounters = !isEmptyOutcome(delta) || isClosed(next.state) || next.state === 'handingOff';
    if (!touchesCounters) {
      try {
        const response = previous ? await this.table.updateEntity(entity, 'Replace', { etag: previous.etag }) : await this.table.createEntity(entity);
        return stored(response.etag);
      } catch (error) {
        if (!isConflict(error)) throw error;
        return landed(await this.read(runId, batchId));
      }
    }
    return retryOnConflict(
      `run ${runId} counters`,
      async () => {
        const counters = await readEntity<Record<string, unknown>>(this.table, partitionKey, COUNTERS_ROW);
        const sum = addOutcome(counters ? outcomeOf(counters) : emptyOutcome(), delta, 1);
        const countersEntity = { partitionKey, rowKey: COUNTERS_ROW, ...outcomeProperties(sum), progressAt: new Date(this.clock.now()).toISOString() };
        const actions: TransactionAction[] = [
          previous ? ['update', entity, 'Replace', { etag: previous.etag }] : ['create', entity],
          counters ? ['update', countersEntity, 'Replace', { etag: counters.etag }] : ['create', countersEntity],
        ];
        try {
          const response = await this.table.submitTransaction(actions);
          return stored(response.getResponseForEntity(entity.rowKey)?.etag);
        } catch (error) {
          if (!isConflict(error)) throw error;
          // Either the counters moved (another batch: go again) or this record did (lost, or our own write landed).
          const now = await this.read(runId, batchId);
          if (now?.etag === previous?.etag) throw error;
          return landed(now);
        }
      },
      this.clock.sleep,
    );
  }

  /** Until when a sender may still be sending one of the run's batches (the latest live claim), or undefined when none is. */
  async sendingUntil(runId: string, nowMs: number): Promise<number | undefined> {
    const shards = shardRange(runId);
    const filter = odata`PartitionKey gt ${shards.from} and PartitionKey lt ${shards.to} and RowKey gt ${BATCH_ROW_PREFIX} and RowKey lt ${'batch.'} and state eq ${'sending'}`;
    let until: number | undefined;
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter, select: ['claimUntil'] } })) {
      const ms = Date.parse(String(entity.claimUntil));
      if (ms > nowMs && (until === undefined || ms > until)) until = ms;
    }
    return until;
  }

  /** The closed batches of a run with the token that names their rejects and undelivered parts. */
  async partsTokens(runId: string): Promise<Map<string, string>> {
    const shards = shardRange(runId);
    const filter = odata`PartitionKey gt ${shards.from} and PartitionKey lt ${shards.to} and RowKey gt ${BATCH_ROW_PREFIX} and RowKey lt ${'batch.'}`;
    const tokens = new Map<string, string>();
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter, select: ['RowKey', 'state', 'owner'] } })) {
      const state = String(entity.state);
      if (state === 'settled' || state === 'parked' || state === 'failed')
        tokens.set(String(entity.rowKey).slice(BATCH_ROW_PREFIX.length), String(entity.owner));
    }
    return tokens;
  }
}
