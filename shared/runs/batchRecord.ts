import { z } from 'zod';
import { emptyOutcome, type BatchOutcome } from './runTable';

/**
 * A batch's life, one record per batch id:
 *
 *   (none) ──claim──► sending ──settle──────────────► settled
 *                       │  └──hand off──► handingOff ──► settled
 *                       ├──park (run halted)───────► parked ──resume──► sending
 *                       └──fail (poison, run ended)► failed ──resume──► sending
 *                                                      └──resume──► parked (until it is sent again)
 *   (none) ──────────── a hand-off child that is parked or failed at once ──► parked | failed
 *
 * A state is recorded before the work it stands for is done, and every write is conditional on
 * the record as read, so two copies of a message can never both act: the one that claims the
 * record sends, a copy that finds it settled is a duplicate and writes nothing.
 */
export const batchStates = ['sending', 'handingOff', 'settled', 'parked', 'failed'] as const;
export type BatchState = (typeof batchStates)[number];

/** Which state may follow which; `new` is a batch without a record. */
export const batchTransitions: Record<BatchState | 'new', readonly BatchState[]> = {
  new: ['sending', 'parked', 'failed'],
  sending: ['sending', 'handingOff', 'settled', 'parked', 'failed'],
  handingOff: ['settled'],
  settled: [],
  parked: ['sending'],
  failed: ['sending', 'parked'],
};

export function canMove(from: BatchState | 'new', to: BatchState): boolean {
  return batchTransitions[from].includes(to);
}

/** States in which the batch's profiles all have an ending the run counts (parked ones wait for a resume). */
export function isClosed(state: BatchState): boolean {
  return state === 'settled' || state === 'parked' || state === 'failed';
}

/**
 * Profiles a batch could not settle move to a child batch: sent again later (defer), parked until
 * a resume (park), or counted failed and kept for a resume (fail).
 */
export const handoffSchema = z.strictObject({
  kind: z.enum(['defer', 'park', 'fail']),
  childBatchId: z.string().min(1),
  reason: z.string(),
  /** A deferred child is due on the queue from then on (its visibility delay). */
  dueAt: z.string().optional(),
});
export type Handoff = z.output<typeof handoffSchema>;

const count = z.coerce.number().int();

/** The stored record (a table entity); counts are the batch's own outcome, as added to the run's counters. */
export const batchRecordSchema = z.looseObject({
  state: z.enum(batchStates),
  /** Who claimed the batch; once closed, the token that names the rejects and undelivered parts it wrote. */
  owner: z.string().min(1),
  /** Until when the owner may work on it undisturbed; after that a redelivery may take over. */
  claimUntil: z.string(),
  /** JSON of a Handoff, once the batch hands profiles on. */
  handoff: z.string().optional(),
  usersDelivered: count.default(0),
  usersRejected: count.default(0),
  usersFailed: count.default(0),
  usersParked: count.default(0),
  rowsDelivered: count.default(0),
  rowsRejectedBraze: count.default(0),
  rowsFailed: count.default(0),
  rowsParked: count.default(0),
  brazeRequests: count.default(0),
  dataPointsSent: count.default(0),
  rejectedByReason: z.string().default('{}'),
});

export interface BatchRecord {
  state: BatchState;
  owner: string;
  claimUntil: string;
  handoff?: Handoff;
  outcome: BatchOutcome;
}

export function parseBatchRecord(entity: unknown, where: string): BatchRecord {
  const parsed = batchRecordSchema.safeParse(entity);
  if (!parsed.success) throw new Error(`${where} is not a valid batch record: ${parsed.error.issues[0]?.message}`);
  const r = parsed.data;
  const outcome: BatchOutcome = {
    ...emptyOutcome(),
    usersDelivered: r.usersDelivered,
    usersRejected: r.usersRejected,
    usersFailed: r.usersFailed,
    usersParked: r.usersParked,
    rowsDelivered: r.rowsDelivered,
    rowsRejectedBraze: r.rowsRejectedBraze,
    rowsFailed: r.rowsFailed,
    rowsParked: r.rowsParked,
    brazeRequests: r.brazeRequests,
    dataPointsSent: r.dataPointsSent,
    rejectedByReason: z.record(z.string(), z.number()).parse(JSON.parse(r.rejectedByReason)),
  };
  const handoff = r.handoff === undefined ? undefined : handoffSchema.parse(JSON.parse(r.handoff));
  return { state: r.state, owner: r.owner, claimUntil: r.claimUntil, handoff, outcome };
}

/** What a delivery does with the record it finds. Pure: tested on its own. */
export type ReceiptDecision =
  | { kind: 'claim' }
  /** Another invocation works on it and its claim still runs: look again when the claim ends. */
  | { kind: 'busy'; untilMs: number }
  /** A replay after a crash mid-hand-off: finish the hand-off, nothing else. */
  | { kind: 'finishHandoff' }
  | { kind: 'duplicate' };

export function onReceipt(record: BatchRecord | undefined, message: { resumed: boolean }, nowMs: number): ReceiptDecision {
  if (!record) return { kind: 'claim' };
  switch (record.state) {
    case 'sending': {
      const untilMs = Date.parse(record.claimUntil);
      return untilMs > nowMs ? { kind: 'busy', untilMs } : { kind: 'claim' };
    }
    case 'handingOff':
      return { kind: 'finishHandoff' };
    case 'parked':
    case 'failed':
      // Only a resume reopens a batch that waits for one; any other copy is a duplicate.
      return message.resumed ? { kind: 'claim' } : { kind: 'duplicate' };
    case 'settled':
      return { kind: 'duplicate' };
  }
}
