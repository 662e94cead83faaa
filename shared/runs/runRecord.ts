import { z } from 'zod';
import { runFolderTime } from '../ci/exportRefresh';

export const runStatuses = [
  'queued',
  'enqueuing',
  'held',
  'sending',
  'finalizing',
  'completed',
  'halted',
  'stalled',
  'failed',
  'superseded',
  'cancelled',
] as const;
export type RunStatus = (typeof runStatuses)[number];

/**
 * What may happen to a run, and which status each event moves it from and to. The run store applies
 * an event only through this table: an event that does not fit the current status leaves the
 * status as it is (a halt outlives the end of enqueueing; a finished run is never reopened by a
 * late batch). Statuses not named under an event are not changed by it.
 */
export const runTransitions = {
  /** The first enqueuer takes the run. */
  startEnqueue: { queued: 'enqueuing' },
  /** The enqueuer gave the run back after a transient failure; the next one starts over. */
  releaseEnqueue: { enqueuing: 'queued' },
  /** Every batch is on the queue. */
  enqueueDone: { enqueuing: 'sending' },
  /** The run would change more than the destination's guard allows: it waits, sending nothing, for a person. */
  hold: { enqueuing: 'held' },
  /** POST /api/runs/{id}/approve: a held run sends exactly what it previewed. */
  approve: { held: 'enqueuing' },
  /** POST /api/runs/{id}/cancel: a held run ends with nothing sent and the delivered state untouched. */
  cancel: { held: 'cancelled' },
  /** Braze refused the credentials: the rest waits, parked, for a resume. */
  halt: { enqueuing: 'halted', sending: 'halted', stalled: 'halted' },
  /** No batch ended for longer than the stall limit: resumable, and a newer refresh may take over. */
  stall: { sending: 'stalled' },
  /** POST /api/runs/{id}/resume. A completed run is resumed to retry the profiles that failed. */
  resume: { halted: 'sending', stalled: 'sending', completed: 'sending' },
  /**
   * A newer refresh of the destination takes over from a run that cannot finish by itself, or from
   * one that has not started (a queued run of an older refresh; a run older than what was delivered).
   */
  supersede: { queued: 'superseded', held: 'superseded', halted: 'superseded', stalled: 'superseded' },
  /** Bad input: nothing more can be done with this refresh. */
  fail: { queued: 'failed', enqueuing: 'failed', held: 'failed', sending: 'failed', halted: 'failed', stalled: 'failed' },
  /** Every profile has an ending: one finalizer writes the state and the report. */
  startFinalize: { sending: 'finalizing', stalled: 'finalizing', finalizing: 'finalizing' },
  complete: { finalizing: 'completed' },
  /** A dry run has read, mapped and diffed everything and written its preview: it sends nothing. */
  previewDone: { enqueuing: 'completed' },
} as const satisfies Record<string, Partial<Record<RunStatus, RunStatus>>>;
export type RunEvent = keyof typeof runTransitions;

/** The status an event leads to from `status`, or undefined when the event does not apply to it. */
export function statusAfter(status: RunStatus, event: RunEvent): RunStatus | undefined {
  return (runTransitions[event] as Partial<Record<RunStatus, RunStatus>>)[status];
}

export const runTriggers = ['timer', 'http', 'blob', 'resume', 'local'] as const;
export type RunTrigger = (typeof runTriggers)[number];

const count = z.number().int().min(0).default(0);

/** Row and profile counters of a run. Rows: input CSV rows. Users: Braze objects (a leaver is a user, not a row). */
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
  /** Users the run deletes from Braze (the erasure table); among usersEnqueued, delivered once Braze took the deletion. */
  erasuresEnqueued: count,
  usersDelivered: count,
  usersRejected: count,
  usersFailed: count,
  usersParked: count,
  /** Queue messages the enqueuer sent (each a batch with its own id). */
  batchesEnqueued: count,
  brazeRequests: count,
  dataPointsSent: count,
  /** What sending every row in full would have cost: the saving of the incremental sync. */
  dataPointsFullSend: count,
});
export type RunCounts = z.output<typeof runCountsSchema>;

/** The run as the store assembles it: the run entity (partition = run id, row = "run") plus its counter shards. */
export const runRecordSchema = runCountsSchema.extend({
  runId: z.string(),
  status: z.enum(runStatuses),
  trigger: z.enum(runTriggers),
  destination: z.string(),
  instance: z.string(),
  modelJsonPath: z.string(),
  refreshKey: z.string(),
  refreshLabel: z.string().default(''),
  /** When CI took the refresh's snapshot (ISO 8601 UTC; empty when unknown): a run never sends a snapshot older than the delivered one. */
  refreshTime: z.string().default(''),
  /** The destination lock's generation this run claimed (0 until it claims): orders the runs that write the delivered state. */
  generation: z.number().int().min(0).default(0),
  /**
   * A superseded run that may have delivered part of its snapshot (the destination lock's uncertain
   * run when this one claimed it): this run sends every profile that run sent in full, and clears
   * every membership it may have set.
   */
  takesOver: z.string().optional(),
  /** The last time a run waiting for its destination looked (ISO): one message keeps looking, copies of it stop. */
  lookedAt: z.string().optional(),
  /** A forced run sent a refresh older than the one Braze held: says which, for the status. */
  olderThanDelivered: z.string().optional(),
  force: z.boolean().default(false),
  /** A preview: read, map and diff as a run would, send nothing, leave the delivered state alone. */
  dryRun: z.boolean().default(false),
  /** A reconcile: compares Braze's segment exports with the refresh and sends only what drifted. */
  reconcile: z.boolean().default(false),
  /** JSON: a reconcile's drift summary (counts and a redacted sample), once its shards are diffed. */
  drift: z.string().optional(),
  enqueueDone: z.boolean().default(false),
  createdAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().optional(),
  /** Who holds the run's lease (an enqueuer or finalizer), and until when; a crashed holder's lease runs out. */
  leaseOwner: z.string().optional(),
  leaseUntil: z.string().optional(),
  /**
   * Reading phases whose steps' messages were all sent (readingPlan's advance): a copy of a step
   * that finds its phase done sends the next phase's only if this says no one did.
   */
  phasesSent: z.number().int().min(0).default(0),
  /** Shards the run's profiles are split into (0 until the run is planned). */
  shards: z.number().int().min(0).default(0),
  /** The delivered state was of an older format: every profile was sent in full. */
  stateFallback: z.boolean().default(false),
  /** The run's batches wait in blobs until its guard is passed (or a person approves): decided at planning. */
  staged: z.boolean().default(false),
  /** A person approved the held run: it sends what it previewed. */
  approved: z.boolean().default(false),
  /** Why the guard held the run (counts and shares, no PII). */
  heldReason: z.string().optional(),
  /**
   * JSON: the delivered state the run diffs against, as the destination's pointer named it when the
   * run was planned (`null`: none) — read once, so every shard of a run (a dry run too, which holds
   * no lock) diffs against the same state. Absent until planned, and on runs of an older version.
   */
  stateBase: z.string().optional(),
  error: z.string().optional(),
  supersededBy: z.string().optional(),
  /** JSON: reason → rows, input and Braze rejects together (assembled from the run and its counter shards). */
  rejectedByReason: z.string().default('{}'),
  /** JSON: reason → rows rejected while reading the export (written by the enqueuer). */
  inputRejectedByReason: z.string().default('{}'),
  /** The blob in the state container that lists the refresh's segments and partitions (ETags pinned). */
  sourcesBlob: z.string(),
  /** Rows the enqueuer has read so far (updated with its lease); `rowsRead` once it is done. */
  rowsReadSoFar: z.number().int().min(0).default(0),
  /** The latest moment a batch of this run ended or was handed on, or the run itself changed. */
  lastProgressAt: z.string().optional(),
  /** JSON: notifications a change of status owes webhooks that are not queued yet (sync/notify's owing). */
  owedNotices: z.string().optional(),
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

/** When CI took the run's snapshot; from its run folder for a run recorded before it kept the time; empty when unknown. */
export function refreshTimeOf(run: Pick<RunRecord, 'refreshTime' | 'refreshLabel'>): string {
  return run.refreshTime || runFolderTime(run.refreshLabel) || '';
}

/** `a`'s snapshot was taken before `b`'s (false when either time is unknown: nothing is refused on a guess). */
export function isOlderRefresh(a: Pick<RunRecord, 'refreshTime' | 'refreshLabel'>, b: Pick<RunRecord, 'refreshTime' | 'refreshLabel'>): boolean {
  const [at, bt] = [refreshTimeOf(a), refreshTimeOf(b)];
  return at !== '' && bt !== '' && at < bt;
}

/** Both snapshots were taken at the same, known time (a refresh uploaded again). */
export function isSameRefreshTime(a: Pick<RunRecord, 'refreshTime' | 'refreshLabel'>, b: Pick<RunRecord, 'refreshTime' | 'refreshLabel'>): boolean {
  const at = refreshTimeOf(a);
  return at !== '' && at === refreshTimeOf(b);
}

/** No more work will happen for the run by itself. `completed` can still be resumed to retry failed profiles. */
export function isTerminal(status: RunStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'superseded' || status === 'cancelled';
}

/** Rows that have reached an end: everything enqueued is delivered, rejected, or failed. */
export function rowsAccountedFor(run: RunCounts): number {
  return run.rowsRejectedInput + run.rowsSkippedUnchanged + run.rowsDelivered + run.rowsRejectedBraze + run.rowsFailed;
}

/**
 * How far a run is: rows read (while enqueueing too), profiles delivered and pending, and, while
 * sending, an estimate of the time left at the rate so far.
 */
export function runProgress(run: RunRecord, nowMs: number) {
  const ended = run.usersDelivered + run.usersRejected + run.usersFailed;
  const pending = run.enqueueDone ? Math.max(0, run.usersEnqueued - ended) : undefined;
  const startedMs = Date.parse(run.createdAt);
  const elapsedSeconds = Math.max(0, (nowMs - startedMs) / 1000);
  const rate = elapsedSeconds > 0 ? ended / elapsedSeconds : 0;
  const sending = run.enqueueDone && !isTerminal(run.status) && run.status !== 'halted';
  return {
    rowsRead: run.enqueueDone ? run.rowsRead : run.rowsReadSoFar,
    profilesDelivered: run.usersDelivered,
    profilesPending: pending,
    profilesPerSecond: Math.round(rate),
    etaSeconds: sending && pending !== undefined && rate > 0 ? Math.ceil(pending / rate) : undefined,
  };
}

/** A public view of a run for the HTTP API and the local runner: counts, no PII. */
export function runSummary(run: RunRecord, nowMs = Date.now()) {
  return {
    runId: run.runId,
    status: run.status,
    trigger: run.trigger,
    destination: run.destination,
    instance: run.instance,
    refresh: run.refreshLabel,
    refreshTime: run.refreshTime || undefined,
    force: run.force,
    dryRun: run.dryRun,
    reconcile: run.reconcile,
    drift: run.drift ? (JSON.parse(run.drift) as unknown) : undefined,
    createdAt: run.createdAt,
    finishedAt: run.finishedAt,
    lastProgressAt: run.lastProgressAt,
    shards: run.shards,
    note:
      run.status === 'held'
        ? `held by the destination's guard: ${run.heldReason ?? 'it would change more than the guard allows'}. Nothing was sent. The preview is at /api/runs/${run.runId}/preview; POST /api/runs/${run.runId}/approve sends exactly that, POST /api/runs/${run.runId}/cancel ends the run with nothing sent`
        : run.dryRun
          ? run.reconcile
            ? `dry-run reconcile: nothing was repaired; the drift report is at /api/runs/${run.runId}/preview`
            : `dry run: nothing was sent; the preview is at /api/runs/${run.runId}/preview`
          : run.olderThanDelivered
            ? run.olderThanDelivered
            : run.stateFallback
              ? 'the delivered state was written by an older version: every profile was sent in full'
              : undefined,
    error: run.error,
    supersededBy: run.supersededBy,
    heldReason: run.heldReason,
    approved: run.approved || undefined,
    progress: runProgress(run, nowMs),
    rows: {
      read: run.rowsRead,
      delivered: run.rowsDelivered,
      skippedUnchanged: run.rowsSkippedUnchanged,
      rejected: run.rowsRejectedInput + run.rowsRejectedBraze,
      failed: run.rowsFailed,
      parked: run.rowsParked,
      // A dry run's rows to send are never sent: nothing of it is pending; they are what it would send.
      pending: run.dryRun ? 0 : Math.max(0, run.rowsRead - rowsAccountedFor(run) - run.rowsParked),
      wouldSend: run.dryRun ? run.rowsEnqueued : undefined,
    },
    rejectedByReason: reasonCounts(run),
    users: {
      enqueued: run.usersEnqueued,
      delivered: run.usersDelivered,
      rejected: run.usersRejected,
      failed: run.usersFailed,
      parked: run.usersParked,
      exitsEnqueued: run.exitsEnqueued,
      erasuresEnqueued: run.erasuresEnqueued,
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
