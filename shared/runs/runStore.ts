import { createHash } from 'node:crypto';
import { odata, type TableClient, type TableEntity } from '@azure/data-tables';
import type { Clock } from '../clock';
import { retryOnConflict } from '../storage/etagRetry';
import { isConflict } from '../storage/storageErrors';
import { readEntity } from '../storage/tableEntities';
import { runRecordSchema, statusAfter, type RunEvent, type RunRecord } from './runRecord';
import {
  addOutcome,
  COUNTERS_ROW,
  emptyOutcome,
  outcomeCounters,
  outcomeOf,
  outcomeProperties,
  runIdOfPartition,
  RUN_ROW,
  shardRange,
  type BatchOutcome,
} from './runTable';

/** The shape of the ids runIdFor makes; anything else is not a run of ours. */
export function isRunId(id: string): boolean {
  return /^[rfdc]-[0-9a-f]{24}(-[0-9a-z]+)?$/.test(id);
}

/** Run id of a refresh: the same refresh always maps to the same run, so overlapping triggers meet. */
export function runIdFor(modelJsonPath: string, refreshKey: string, force: boolean, nonce: string, dryRun = false, reconcile = false): string {
  const hash = createHash('sha256').update(`${modelJsonPath}\n${refreshKey}`).digest('hex').slice(0, 24);
  // Each reconcile is its own run (it compares with Braze as it is now, whatever refresh ran before).
  if (reconcile) return `c-${hash}-${nonce}`;
  // A preview never meets the refresh's real run: each dry run is its own.
  if (dryRun) return `d-${hash}-${nonce}`;
  return force ? `f-${hash}-${nonce}` : `r-${hash}`;
}

/** Fields a change may write: anything but the status, which only moves by an event. */
export type RunPatch = Partial<Omit<RunRecord, 'status' | 'runId' | 'etag' | 'lastProgressAt' | keyof BatchOutcome>> & { event?: RunEvent };

/** The most an error text may take on the run entity (Azure allows 64 KiB per property). */
const MAX_ERROR_CHARS = 4_000;

/**
 * Run records. Every write is conditional (ETag or insert-if-absent), so concurrent triggers and
 * workers neither lose an update nor apply one twice; the status only moves along runTransitions.
 */
export class RunStore {
  constructor(
    private readonly table: TableClient,
    private readonly clock: Clock,
  ) {}

  async get(runId: string): Promise<RunRecord | undefined> {
    const entities: Record<string, unknown>[] = [];
    const shards = shardRange(runId);
    // odata`` quotes the id: it can come from an HTTP route.
    const filter = odata`(PartitionKey eq ${runId} or (PartitionKey gt ${shards.from} and PartitionKey lt ${shards.to})) and (RowKey eq ${RUN_ROW} or RowKey eq ${COUNTERS_ROW})`;
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
      if (runIdOfPartition(String(entity.partitionKey)) === runId) entities.push(entity);
    }
    return assemble(entities);
  }

  /** Inserts the run if no run with this id exists; answers the stored one either way. */
  async create(run: Omit<RunRecord, 'etag' | 'lastProgressAt'>): Promise<{ created: boolean; run: RunRecord }> {
    try {
      await this.table.createEntity(toEntity(run));
      return { created: true, run: (await this.get(run.runId))! };
    } catch (error) {
      if (!isConflict(error)) throw error;
      return { created: false, run: (await this.get(run.runId))! };
    }
  }

  /**
   * Read-modify-write with the ETag. `change` sees the current record and answers the fields to
   * change (and the event, if any), or undefined to leave it alone. An event that does not apply to
   * the current status leaves the status as it is; the other fields are still written.
   */
  async update(runId: string, change: (run: RunRecord) => RunPatch | undefined): Promise<{ run: RunRecord; changed: boolean }> {
    return retryOnConflict(
      `run ${runId}`,
      async () => {
        const run = await this.get(runId);
        if (!run) throw new Error(`run ${runId} does not exist`);
        const patch = change(run);
        if (!patch) return { run, changed: false };
        const { event, ...fields } = patch;
        const status = event ? (statusAfter(run.status, event) ?? run.status) : run.status;
        const next = { ...run, ...fields, status, updatedAt: new Date(this.clock.now()).toISOString() };
        if (next.error && next.error.length > MAX_ERROR_CHARS) next.error = `${next.error.slice(0, MAX_ERROR_CHARS)}…`;
        await this.table.updateEntity(toEntity(next), 'Replace', { etag: run.etag });
        return { run: (await this.get(runId))!, changed: true };
      },
      this.clock.sleep,
    );
  }

  /** Moves counts between buckets outside any batch (a superseded run's parked profiles become failed). */
  async adjustCounters(runId: string, delta: Partial<Omit<BatchOutcome, 'rejectedByReason'>>): Promise<void> {
    const adjustment = { ...emptyOutcome(), ...delta };
    await retryOnConflict(
      `run ${runId} counters`,
      async () => {
        const current = await readEntity<Record<string, unknown>>(this.table, runId, COUNTERS_ROW);
        const next = addOutcome(current ? outcomeOf(current) : emptyOutcome(), adjustment, 1);
        const entity = { partitionKey: runId, rowKey: COUNTERS_ROW, ...outcomeProperties(next), progressAt: new Date(this.clock.now()).toISOString() };
        if (current) await this.table.updateEntity(entity, 'Replace', { etag: current.etag });
        else await this.table.createEntity(entity);
      },
      this.clock.sleep,
    );
  }

  /** Removes a run's records: the run, its counters and its batch records. */
  async deleteRun(runId: string): Promise<number> {
    const shards = shardRange(runId);
    const filter = odata`PartitionKey eq ${runId} or (PartitionKey gt ${shards.from} and PartitionKey lt ${shards.to})`;
    const byPartition = new Map<string, string[]>();
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter, select: ['PartitionKey', 'RowKey'] } })) {
      const partition = String(entity.partitionKey);
      if (runIdOfPartition(partition) !== runId) continue;
      byPartition.set(partition, [...(byPartition.get(partition) ?? []), String(entity.rowKey)]);
    }
    let deleted = 0;
    for (const [partitionKey, rowKeys] of byPartition) {
      // A transaction takes at most 100 operations, all in one partition.
      for (let i = 0; i < rowKeys.length; i += 100) {
        const chunk = rowKeys.slice(i, i + 100);
        await this.table.submitTransaction(chunk.map((rowKey) => ['delete', { partitionKey, rowKey }]));
        deleted += chunk.length;
      }
    }
    return deleted;
  }

  /** Every run with its counts, newest first. */
  async listRuns(): Promise<RunRecord[]> {
    const byRun = new Map<string, Record<string, unknown>[]>();
    const filter = odata`RowKey eq ${RUN_ROW} or RowKey eq ${COUNTERS_ROW}`;
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
      const runId = runIdOfPartition(String(entity.partitionKey));
      const list = byRun.get(runId) ?? [];
      list.push(entity);
      byRun.set(runId, list);
    }
    const runs = [...byRun.values()].map(assemble).filter((r): r is RunRecord => r !== undefined);
    return runs.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }
}

/** The run entity plus the sum of its counter entities, as one record. */
function assemble(entities: Record<string, unknown>[]): RunRecord | undefined {
  const runEntity = entities.find((e) => e.rowKey === RUN_ROW);
  if (!runEntity) return undefined;
  let delivery = emptyOutcome();
  let lastProgressAt = String(runEntity.updatedAt ?? '');
  for (const counters of entities) {
    if (counters === runEntity) continue;
    delivery = addOutcome(delivery, outcomeOf(counters), 1);
    const progressAt = typeof counters.progressAt === 'string' ? counters.progressAt : '';
    if (progressAt > lastProgressAt) lastProgressAt = progressAt;
  }
  const inputReasons = JSON.parse(String(runEntity.inputRejectedByReason ?? '{}')) as Record<string, number>;
  const reasons = { ...inputReasons };
  for (const [reason, n] of Object.entries(delivery.rejectedByReason)) reasons[reason] = (reasons[reason] ?? 0) + n;
  const { rejectedByReason: _braze, ...counters } = delivery;
  return runRecordSchema.parse({
    ...runEntity,
    ...counters,
    rejectedByReason: JSON.stringify(reasons),
    lastProgressAt: lastProgressAt || undefined,
    etag: runEntity.etag,
  });
}

/** The run entity holds what the run itself writes; delivery counts and Braze's reasons live in the counters. */
function toEntity(run: Omit<RunRecord, 'etag' | 'lastProgressAt'> & { etag?: string; lastProgressAt?: string }): TableEntity<Record<string, unknown>> {
  const { etag: _etag, rejectedByReason: _merged, lastProgressAt: _progress, ...fields } = run as RunRecord;
  const entity: TableEntity<Record<string, unknown>> = { partitionKey: run.runId, rowKey: RUN_ROW };
  const delivery = new Set<string>(outcomeCounters);
  for (const [name, value] of Object.entries(fields)) if (value !== undefined && !delivery.has(name)) entity[name] = value;
  return entity;
}
