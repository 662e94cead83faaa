import { odata, type TableClient } from '@azure/data-tables';
import { z } from 'zod';
import type { Clock } from '../clock';
import { isConflict } from '../storage/storageErrors';
import { readEntity } from '../storage/tableEntities';
import { previewTallySchema } from './previewTally';
import { driftTallySchema } from './driftTally';

/**
 * The units a run's reading is split into — one map unit per partition, one diff unit per shard,
 * and for a reconcile one export unit per segment (Braze's export of it, read into shards) — each with one record in the run's own table partition. A unit is claimed before it works (so
 * two copies of its message never both do), and recorded done with the token that names the
 * blobs it wrote and the counts it found. The run's totals are the sum of its done units.
 */
export type UnitKind = 'map' | 'shard' | 'export';

export const unitTotalsSchema = z.object({
  rowsRead: z.number().int().min(0).default(0),
  rowsRejectedInput: z.number().int().min(0).default(0),
  rowsSkippedUnchanged: z.number().int().min(0).default(0),
  rowsEnqueued: z.number().int().min(0).default(0),
  usersEnqueued: z.number().int().min(0).default(0),
  exitsEnqueued: z.number().int().min(0).default(0),
  /** Users to be deleted from Braze (the erasure table; counted in usersEnqueued too). */
  erasuresEnqueued: z.number().int().min(0).default(0),
  batchesEnqueued: z.number().int().min(0).default(0),
  dataPointsFullSend: z.number().int().min(0).default(0),
  /** Input rejects by reason. */
  rejectedByReason: z.record(z.string(), z.number().int()).default({}),
  /** Profiles the shard holds in the state it wrote (shard units). */
  profiles: z.number().int().min(0).default(0),
  /** The shard's state blob (shard units). */
  stateBlob: z.string().optional(),
  /** The state this shard read was of an older format: everything was sent in full. */
  stateFallback: z.boolean().optional(),
  /** Profiles of the shard's state keyed by e-mail (shard units). */
  emailKeys: z.number().int().min(0).optional(),
  /** The shard wrote GUID customer IDs in their canonical spelling (its state's keys are). */
  guidKeys: z.boolean().optional(),
  /** The form the shard sent memberships in (`flags`, `list:<attribute>`), and the one it replaced when it switched. */
  membershipForm: z.string().min(1).optional(),
  membershipFrom: z.string().min(1).optional(),
  /** A dry run's findings in this shard. */
  preview: previewTallySchema.optional(),
  /** A reconcile's findings in this shard. */
  drift: driftTallySchema.optional(),
  /** Rows keyed by a fallback (e-mail or alias) rather than an external_id (map units). */
  rowsKeyedByFallback: z.number().int().min(0).optional(),
  /** Users a segment export listed (export units), and those no matching rule could key. */
  usersExported: z.number().int().min(0).optional(),
  usersUnmatched: z.number().int().min(0).optional(),
  /** How long the step's work took, and when it ended: a run's timeline, and what the benchmark's scale model is fed. */
  workSeconds: z.number().min(0).optional(),
  endedAt: z.string().optional(),
});
export type UnitTotals = z.output<typeof unitTotalsSchema>;

const unitRecordSchema = z.looseObject({
  state: z.enum(['working', 'done']),
  owner: z.string().min(1),
  claimUntil: z.string(),
  totals: z.string().optional(),
});

export interface UnitRecord {
  kind: UnitKind;
  index: number;
  state: 'working' | 'done';
  owner: string;
  claimUntil: string;
  totals?: UnitTotals;
  etag: string;
}

const UNIT_PREFIX = 'unit-';

function unitRow(kind: UnitKind, index: number): string {
  return `${UNIT_PREFIX}${kind}-${String(index).padStart(5, '0')}`;
}

function parseUnit(entity: Record<string, unknown> & { etag: string }): UnitRecord {
  const match = /^unit-(map|shard|export)-(\d+)$/.exec(String(entity.rowKey));
  if (!match) throw new Error(`${String(entity.rowKey)} is not a unit record`);
  const record = unitRecordSchema.parse(entity);
  return {
    kind: match[1] as UnitKind,
    index: Number(match[2]),
    state: record.state,
    owner: record.owner,
    claimUntil: record.claimUntil,
    totals: record.totals === undefined ? undefined : unitTotalsSchema.parse(JSON.parse(record.totals)),
    etag: entity.etag,
  };
}

export type ClaimResult = { kind: 'claimed'; unit: UnitRecord } | { kind: 'done'; unit: UnitRecord } | { kind: 'busy'; untilMs: number };

export class UnitLedger {
  constructor(
    private readonly table: TableClient,
    private readonly clock: Clock,
  ) {}

  async read(runId: string, kind: UnitKind, index: number): Promise<UnitRecord | undefined> {
    const entity = await readEntity<Record<string, unknown>>(this.table, runId, unitRow(kind, index));
    return entity && parseUnit(entity);
  }

  /** Every unit of a kind that has a record. */
  async list(runId: string, kind: UnitKind): Promise<UnitRecord[]> {
    const from = `${UNIT_PREFIX}${kind}-`;
    const filter = odata`PartitionKey eq ${runId} and RowKey ge ${from} and RowKey lt ${`${from}~`}`;
    const units: UnitRecord[] = [];
    for await (const entity of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter } }))
      units.push(parseUnit(entity as Record<string, unknown> & { etag: string }));
    return units.sort((a, b) => a.index - b.index);
  }

  /**
   * Takes a unit for `owner` unless it is done, or another owner's claim still runs. A claim that
   * ran out (its worker died) is taken over.
   */
  async claim(runId: string, kind: UnitKind, index: number, owner: string, holdMs: number): Promise<ClaimResult> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const current = await this.read(runId, kind, index);
      if (current?.state === 'done') return { kind: 'done', unit: current };
      const nowMs = this.clock.now();
      if (current && Date.parse(current.claimUntil) > nowMs) return { kind: 'busy', untilMs: Date.parse(current.claimUntil) };
      const entity = { partitionKey: runId, rowKey: unitRow(kind, index), state: 'working', owner, claimUntil: new Date(nowMs + holdMs).toISOString() };
      try {
        const response = current ? await this.table.updateEntity(entity, 'Replace', { etag: current.etag }) : await this.table.createEntity(entity);
        return { kind: 'claimed', unit: { kind, index, state: 'working', owner, claimUntil: entity.claimUntil, etag: response.etag ?? '' } };
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
    throw new Error(`run ${runId}: could not claim ${kind} unit ${index} against concurrent copies`);
  }

  /** Extends the claim while the unit works; false when it was lost to another owner. */
  async renew(runId: string, kind: UnitKind, index: number, owner: string, holdMs: number): Promise<boolean> {
    const current = await this.read(runId, kind, index);
    if (!current || current.owner !== owner || current.state !== 'working') return false;
    const entity = {
      partitionKey: runId,
      rowKey: unitRow(kind, index),
      state: 'working',
      owner,
      claimUntil: new Date(this.clock.now() + holdMs).toISOString(),
    };
    try {
      await this.table.updateEntity(entity, 'Replace', { etag: current.etag });
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw error;
    }
  }

  /** Records the unit done with its totals; false when the claim was lost (nothing of this owner counts). */
  async finish(runId: string, kind: UnitKind, index: number, owner: string, totals: UnitTotals): Promise<boolean> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.read(runId, kind, index);
      if (!current || current.owner !== owner) return false;
      if (current.state === 'done') return true;
      const entity = {
        partitionKey: runId,
        rowKey: unitRow(kind, index),
        state: 'done',
        owner,
        claimUntil: current.claimUntil,
        totals: JSON.stringify(totals),
      };
      try {
        await this.table.updateEntity(entity, 'Replace', { etag: current.etag });
        return true;
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
    return false;
  }

  /** Forgets a kind's units, so they run again (a stalled run re-enqueues its batches). */
  async reset(runId: string, kind: UnitKind): Promise<void> {
    for (const unit of await this.list(runId, kind)) {
      await this.table.deleteEntity(runId, unitRow(kind, unit.index), { etag: unit.etag }).catch((error: unknown) => {
        if (!isConflict(error) && (error as { statusCode?: number }).statusCode !== 404) throw error;
      });
    }
  }
}
