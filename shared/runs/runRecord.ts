import { z } from 'zod';

export const runStatuses = ['queued', 'enqueuing', 'sending', 'finalizing', 'completed', 'halted', 'failed', 'superseded'] as const;
export type RunStatus = (typeof runStatuses)[number];

export const runTriggers = ['timer', 'http', 'blob', 'resume', 'local'] as const;
export type RunTrigger = (typeof runTriggers)[number];

const count = z.number().int().min(0).default(0);

/** Row and user counters of a run. Rows: input CSV rows. Users: Braze objects (a leaver is a user, not a row). */
export const runCountsSchema = z.object({
  rowsRead: count,
  rowsRejectedInput: count,
  rowsSkippedUnchanged: count,
  rowsEnqueued: count,
  rowsDelivered: count,
  rowsRejectedBraze: count,
  rowsFailed: count,
  rowsParked: count,
  usersEnqueued: count,
  exitsEnqueued: count,
  usersDelivered: count,
  usersRejected: count,
  usersFailed: count,
  usersParked: count,
  batchesEnqueued: count,
  brazeRequests: count,
  dataPointsSent: count,
  /** What sending every row in full would have cost: the saving of the incremental sync. */
  dataPointsFullSend: count,
});
export type RunCounts = z.output<typeof runCountsSchema>;

/** The run entity as stored in the runs table (partition = run id, row = "run"). */
export const runRecordSchema = runCountsSchema.extend({
  runId: z.string(),
  status: z.enum(runStatuses),
  trigger: z.enum(runTriggers),
  destination: z.string(),
  instance: z.string(),
  modelJsonPath: z.string(),
  refreshKey: z.string(),
  refreshLabel: z.string().default(''),
  force: z.boolean().default(false),
  enqueueDone: z.boolean().default(false),
  createdAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().optional(),
  /** Until when the current enqueuer holds the run; a crashed one's lease runs out and another takes over. */
  leaseUntil: z.string().optional(),
  error: z.string().optional(),
  supersededBy: z.string().optional(),
  /** JSON: reason → rows, input and Braze rejects together (assembled from the run and its counter shards). */
  rejectedByReason: z.string().default('{}'),
  /** JSON: reason → rows rejected while reading the export (written by the enqueuer). */
  inputRejectedByReason: z.string().default('{}'),
  /** JSON: partition blob names, indexed as in the batches' source references. */
  sources: z.string().default('[]'),
  etag: z.string().optional(),
});
export type RunRecord = z.output<typeof runRecordSchema>;

export function reasonCounts(run: Pick<RunRecord, 'rejectedByReason'>): Record<string, number> {
  try {
    return JSON.parse(run.rejectedByReason) as Record<string, number>;
  } catch {
    return {};
  }
}

export function isTerminal(status: RunStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'superseded';
}

/** Rows that have reached an end: everything enqueued is delivered, rejected, or failed. */
export function rowsAccountedFor(run: RunCounts): number {
  return run.rowsRejectedInput + run.rowsSkippedUnchanged + run.rowsDelivered + run.rowsRejectedBraze + run.rowsFailed;
}

/** A public view of a run for the HTTP API and the local runner: counts, no PII. */
export function runSummary(run: RunRecord) {
  return {
    runId: run.runId,
    status: run.status,
    trigger: run.trigger,
    destination: run.destination,
    instance: run.instance,
    refresh: run.refreshLabel,
    force: run.force,
    createdAt: run.createdAt,
    finishedAt: run.finishedAt,
    error: run.error,
    supersededBy: run.supersededBy,
    rows: {
      read: run.rowsRead,
      delivered: run.rowsDelivered,
      skippedUnchanged: run.rowsSkippedUnchanged,
      rejected: run.rowsRejectedInput + run.rowsRejectedBraze,
      failed: run.rowsFailed,
      parked: run.rowsParked,
      pending: Math.max(0, run.rowsRead - rowsAccountedFor(run) - run.rowsParked),
    },
    rejectedByReason: reasonCounts(run),
    users: {
      enqueued: run.usersEnqueued,
      delivered: run.usersDelivered,
      rejected: run.usersRejected,
      failed: run.usersFailed,
      parked: run.usersParked,
      exitsEnqueued: run.exitsEnqueued,
    },
    braze: {
      batches: run.batchesEnqueued,
      requests: run.brazeRequests,
      dataPointsSent: run.dataPointsSent,
      dataPointsFullSend: run.dataPointsFullSend,
    },
  };
}
export type RunSummary = ReturnType<typeof runSummary>;
