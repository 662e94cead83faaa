import { InvalidInputError } from '../errors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { deleteWorkingBlobs, driftReportName, mapPartName, previewReportName, shardPartName } from '../runs/runBlobs';
import { addDrift, type DriftTally } from '../runs/driftTally';
import { composeRejectsReport } from '../runs/rejectsReport';
import { addPreviews, type PreviewTally } from '../runs/previewTally';
import { isTerminal, statusAfter, type RunCounts, type RunRecord } from '../runs/runRecord';
import type { BatchOutcome } from '../runs/runTable';
import type { UnitRecord } from '../runs/unitLedger';
import { readSources, runDestination } from '../runs/runSources';
import { wakeWaiting } from './claimDestination';
import { failRun } from './failRun';
import { finalizeIfReadingEnded, finalizeRun, requestFinalizeIfComplete } from './finalizeRun';
import { releaseStaged } from './heldRuns';
import { guardVerdict, type RunChange } from './massChangeGuard';
import { stateBaseProfiles } from './stateBase';
import { announceOwed, owe } from './notify';
import type { ConnectorRecord } from '../telemetry';

/** What the reading of a run came to: its totals (the sum of its steps'), input rejects by reason, its steps, a reconcile's drift. */
interface ReadingSummary {
  totals: Omit<RunCounts, keyof BatchOutcome>;
  reasons: Record<string, number>;
  units: UnitRecord[];
  drift: DriftSummary | undefined;
}

/** The counts a run's totals sum over its units. */
type SummedCount =
  | 'rowsRead'
  | 'rowsRejectedInput'
  | 'rowsSkippedUnchanged'
  | 'rowsEnqueued'
  | 'usersEnqueued'
  | 'exitsEnqueued'
  | 'erasuresEnqueued'
  | 'batchesEnqueued'
  | 'dataPointsFullSend';

/** Every shard is done: the run's totals are the sum of its units, and it sends. */
export async function completeReading(deps: ConnectorDeps, planned: RunRecord): Promise<void> {
  const runId = planned.runId;
  const units = [...(await deps.units.list(runId, 'map')), ...(await deps.units.list(runId, 'shard'))];
  const drift = planned.reconcile ? await driftSummary(deps, planned, units) : undefined;
  const sum = (name: SummedCount) => units.reduce((n, u) => n + (u.totals?.[name] ?? 0), 0);
  const reasons: Record<string, number> = {};
  for (const unit of units) for (const [reason, n] of Object.entries(unit.totals?.rejectedByReason ?? {})) reasons[reason] = (reasons[reason] ?? 0) + n;
  const stateFallback = units.some((u) => u.totals?.stateFallback);
  const totals = {
    rowsRead: sum('rowsRead'),
    rowsRejectedInput: sum('rowsRejectedInput'),
    rowsSkippedUnchanged: sum('rowsSkippedUnchanged'),
    rowsEnqueued: sum('rowsEnqueued'),
    usersEnqueued: sum('usersEnqueued'),
    exitsEnqueued: sum('exitsEnqueued'),
    erasuresEnqueued: sum('erasuresEnqueued'),
    batchesEnqueued: sum('batchesEnqueued'),
    dataPointsFullSend: sum('dataPointsFullSend'),
  };
  if (planned.dryRun) {
    await completePreview(deps, runId, { totals, reasons, units, drift });
    return;
  }
  if (planned.staged && !(await passGuard(deps, planned, { totals, reasons, units, drift }))) return;
  const { run, changed } = await deps.runs.update(runId, (current) => {
    if (current.enqueueDone) return undefined;
    return {
      ...totals,
      rowsReadSoFar: totals.rowsRead,
      inputRejectedByReason: JSON.stringify(reasons),
      stateFallback,
      drift: drift && JSON.stringify(drift),
      enqueueDone: true,
      event: 'enqueueDone',
      ...(drift ? owe(deps, current, statusAfter(current.status, 'enqueueDone') ?? current.status, driftRecord(current, drift)) : {}),
    };
  });
  // Another copy ended the reading first; should its worker have failed before it asked for the
  // finalize (or inside the one it ran), this copy asks.
  if (!changed) return finalizeIfReadingEnded(deps, run);
  if (drift) await reportDrift(deps, run, drift);
  deps.log.info(
    `run ${runId}: read ${totals.rowsRead} rows; ${totals.usersEnqueued} profiles to send (${totals.exitsEnqueued} leaving), ${totals.rowsSkippedUnchanged} rows unchanged, ${totals.rowsRejectedInput} rejected; ${totals.batchesEnqueued} batches from ${run.shards} shards${stateFallback ? '; the delivered state was of an older format: everything was sent in full' : ''}`,
  );
  deps.log.record({
    connectorEvent: 'RunEnqueued',
    runId,
    destination: run.destination,
    rowsRead: totals.rowsRead,
    rowsUnchanged: totals.rowsSkippedUnchanged,
    rowsRejected: totals.rowsRejectedInput,
    profilesEnqueued: totals.usersEnqueued,
    exits: totals.exitsEnqueued,
    batches: totals.batchesEnqueued,
    durationMs: deps.clock.now() - Date.parse(run.createdAt),
  });
  // The last batch may have been recorded before enqueueDone was set: whoever writes last asks.
  if (totals.usersEnqueued === 0) await finalizeRun(deps, runId);
  else await requestFinalizeIfComplete(deps, runId);
}

/** A run's preview as GET /api/runs/{id}/preview serves it: what it changes in Braze and what that costs. */
async function writePreviewReport(
  deps: ConnectorDeps,
  run: RunRecord,
  { totals, reasons }: Pick<ReadingSummary, 'totals' | 'reasons'>,
  preview: PreviewTally,
  rejectsReport: string | undefined,
  held?: string[],
): Promise<void> {
  const text = JSON.stringify(
    {
      runId: run.runId,
      destination: run.destination,
      instance: run.instance,
      refresh: run.refreshLabel,
      force: run.force,
      ...(held ? { held } : {}),
      rows: { read: totals.rowsRead, unchanged: totals.rowsSkippedUnchanged, wouldSend: totals.rowsEnqueued, rejected: totals.rowsRejectedInput },
      rejectedByReason: reasons,
      ...(rejectsReport ? { rejectsReport } : {}),
      // merging: e-mail-only profiles whose row got a customer ID, merged into that profile (/users/identify);
      // rewriting: profiles whose memberships go over to the destination's new membership form.
      profiles: {
        wouldSend: totals.usersEnqueued,
        leaving: totals.exitsEnqueued,
        ...(preview.identified ? { merging: preview.identified } : {}),
        ...(preview.rewritten ? { rewriting: preview.rewritten } : {}),
        // erasing: users deleted from Braze (the erasure table).
        ...(totals.erasuresEnqueued ? { erasing: totals.erasuresEnqueued } : {}),
      },
      brazeRequests: preview.requests,
      dataPoints: preview.dataPoints,
      dataPointsFullSend: totals.dataPointsFullSend,
      segments: preview.segments,
      attributes: preview.attributes,
      sample: preview.sample,
    },
    null,
    2,
  );
  await deps.storage.stateContainer.getBlockBlobClient(previewReportName(run.runId)).upload(text, Buffer.byteLength(text), {
    blobHTTPHeaders: { blobContentType: 'application/json' },
  });
}

/**
 * A guarded run has diffed every shard, its batches staged: it sends them if it stays within the
 * destination's guard (or a person approved it), else it is held with its preview and waits.
 * Answers whether it may go on to send.
 */
async function passGuard(deps: ConnectorDeps, planned: RunRecord, reading: ReadingSummary): Promise<boolean> {
  const { totals, units, drift } = reading;
  const run = await deps.runs.get(planned.runId);
  // Held, it waits for a person. A run that began releasing its batches and then halted (a sender
  // met a 401) or was resumed finishes releasing them: its guard was passed.
  if (!run || run.status === 'held' || isTerminal(run.status)) return false;
  // Another copy ended the reading first: as for an unguarded run, this copy asks for the finalize
  // that one owed, should its worker have failed before asking (or inside the finalizer it ran).
  if (run.enqueueDone || run.status === 'finalizing') {
    await finalizeIfReadingEnded(deps, run);
    return false;
  }
  const preview = addPreviews(units.flatMap((u) => (u.totals?.preview ? [u.totals.preview] : [])));
  if (!run.approved && run.status === 'enqueuing') {
    const change: RunChange = drift
      ? {
          segments: Object.fromEntries(
            Object.entries(drift.segments).map(([name, d]) => [name, { members: drift.usersExported[name] ?? 0, cleared: d.stray }]),
          ),
          profilesSent: drift.profiles,
          profilesBefore: stateBaseProfiles(run),
          force: run.force,
        }
      : {
          segments: Object.fromEntries(
            Object.entries(preview.segments).map(([name, s]) => [name, { members: s.leavers + s.changed + s.unchanged, cleared: s.leavers }]),
          ),
          profilesSent: totals.usersEnqueued,
          profilesBefore: stateBaseProfiles(run),
          force: run.force,
          erasing: totals.erasuresEnqueued,
        };
    const held = guardVerdict(runDestination(deps, run).guard, change);
    if (held.length > 0) {
      if (!drift) await writePreviewReport(deps, run, reading, preview, undefined, held);
      await holdRun(deps, run, reading, held);
      return false;
    }
  }
  if (!drift) await writePreviewReport(deps, run, reading, preview, undefined);
  let released: number;
  try {
    released = await releaseStaged(
      deps,
      run,
      units.filter((u) => u.kind === 'shard'),
    );
  } catch (error) {
    if (!(error instanceof InvalidInputError)) throw error;
    await failRun(deps, run, error);
    return false;
  }
  deps.log.info(`run ${run.runId}: ${released} staged batches released${run.approved ? ' (approved)' : ' (within the guard)'}`);
  return true;
}

async function holdRun(deps: ConnectorDeps, run: RunRecord, reading: ReadingSummary, held: string[]): Promise<void> {
  const { totals, reasons, units, drift } = reading;
  const heldReason = held.join('; ');
  const record = {
    connectorEvent: 'RunHeld',
    runId: run.runId,
    destination: run.destination,
    reason: heldReason,
    profilesWouldSend: totals.usersEnqueued,
    exits: totals.exitsEnqueued,
  } as const;
  const { changed, run: heldRun } = await deps.runs.update(run.runId, (current) => {
    const status = statusAfter(current.status, 'hold');
    if (!status) return undefined;
    return {
      ...totals,
      rowsReadSoFar: totals.rowsRead,
      inputRejectedByReason: JSON.stringify(reasons),
      stateFallback: units.some((u) => u.totals?.stateFallback),
      drift: drift && JSON.stringify(drift),
      heldReason,
      event: 'hold',
      ...owe(deps, current, status, record),
    };
  });
  if (!changed) return;
  deps.log.warn(
    `run ${run.runId} held: ${heldReason}. Nothing was sent. See GET /api/runs/${run.runId}/preview, then POST /api/runs/${run.runId}/approve to send exactly that, or POST /api/runs/${run.runId}/cancel`,
  );
  await announceOwed(deps, heldRun, record);
  // A newer refresh waiting for the destination may take over from a held run now.
  await wakeWaiting(deps, run.modelJsonPath);
}

/**
 * A dry run has diffed every shard: its preview (the shards' findings summed, with the input
 * rejects) and its rejects report are written, and it ends without sending anything.
 */
async function completePreview(deps: ConnectorDeps, runId: string, reading: ReadingSummary): Promise<void> {
  const { totals, reasons, units, drift } = reading;
  const run = await deps.runs.get(runId);
  if (!run || run.enqueueDone) return;
  const preview = addPreviews(units.flatMap((u) => (u.totals?.preview ? [u.totals.preview] : [])));
  const owners = new Map<string, string>();
  for (const unit of units) owners.set(unit.kind === 'map' ? mapPartName(unit.index) : shardPartName(unit.index), unit.owner);
  const report = await composeRejectsReport(deps.storage.stateContainer, runId, owners);
  // A dry-run reconcile's report is its drift report (written already): it has no preview.
  if (!drift) await writePreviewReport(deps, run, reading, preview, report.blobName);
  const { changed, run: previewed } = await deps.runs.update(runId, (current) => {
    if (current.enqueueDone) return undefined;
    return {
      ...totals,
      rowsReadSoFar: totals.rowsRead,
      inputRejectedByReason: JSON.stringify(reasons),
      drift: drift && JSON.stringify(drift),
      enqueueDone: true,
      finishedAt: new Date(deps.clock.now()).toISOString(),
      event: 'previewDone',
      ...(drift ? owe(deps, current, statusAfter(current.status, 'previewDone') ?? current.status, driftRecord(current, drift)) : {}),
    };
  });
  if (!changed) return;
  await deleteWorkingBlobs(deps.storage.stateContainer, runId);
  if (drift) {
    await reportDrift(deps, previewed, drift);
    return;
  }
  deps.log.info(
    `run ${runId} (dry run) previewed: ${totals.usersEnqueued} profiles would be sent (${totals.exitsEnqueued} leaving) in ${preview.requests} requests, ${preview.dataPoints} data points; ${totals.rowsSkippedUnchanged} rows unchanged, ${totals.rowsRejectedInput} rejected; nothing was sent`,
  );
  deps.log.record({
    connectorEvent: 'RunPreviewed',
    runId,
    destination: run.destination,
    rowsRead: totals.rowsRead,
    profilesWouldSend: totals.usersEnqueued,
    exits: totals.exitsEnqueued,
    brazeRequests: preview.requests,
    dataPoints: preview.dataPoints,
  });
}

/** A reconcile's findings: the shards' drift summed, with what Braze's exports held. */
export type DriftSummary = DriftTally & { usersExported: Record<string, number>; usersUnmatched: number };

async function driftSummary(deps: ConnectorDeps, run: RunRecord, units: UnitRecord[]): Promise<DriftSummary> {
  const runId = run.runId;
  const segments = await readSources(deps, run);
  const exports = await deps.units.list(runId, 'export');
  const usersExported: Record<string, number> = {};
  for (const unit of exports) usersExported[segments[unit.index].attribute] = unit.totals?.usersExported ?? 0;
  const summary = { ...addDrift(units.flatMap((u) => (u.totals?.drift ? [u.totals.drift] : []))), usersExported, usersUnmatched: 0 };
  summary.usersUnmatched = exports.reduce((n, u) => n + (u.totals?.usersUnmatched ?? 0), 0);
  const text = JSON.stringify(
    { runId, destination: run.destination, instance: run.instance, refresh: run.refreshLabel, dryRun: run.dryRun, ...summary },
    null,
    2,
  );
  await deps.storage.stateContainer.getBlockBlobClient(driftReportName(runId)).upload(text, Buffer.byteLength(text), {
    blobHTTPHeaders: { blobContentType: 'application/json' },
  });
  return summary;
}

async function reportDrift(deps: ConnectorDeps, run: RunRecord, drift: DriftSummary): Promise<void> {
  const record = driftRecord(run, drift);
  deps.log.info(
    `run ${run.runId} reconciled with Braze: ${record.missing} memberships missing in Braze, ${record.stray} stray members (${record.unresolved} more left alone: CI may list them under another key), ${record.staleValues} stale values; ${drift.profiles} profiles ${run.dryRun ? 'would be repaired (dry run: nothing sent)' : 'to repair'} in ${drift.requests} requests${drift.usersUnmatched ? `; ${drift.usersUnmatched} exported users had no identifier the matching rules use (not checked)` : ''}`,
  );
  await announceOwed(deps, run, record);
}

/** What a reconcile's record (and its drift notification) says it found. */
function driftRecord(run: RunRecord, drift: DriftSummary): Extract<ConnectorRecord, { connectorEvent: 'RunReconciled' }> {
  const sum = (key: 'missing' | 'stray' | 'unresolved') => Object.values(drift.segments).reduce((n, s) => n + s[key], 0);
  return {
    connectorEvent: 'RunReconciled',
    runId: run.runId,
    destination: run.destination,
    dryRun: run.dryRun,
    missing: sum('missing'),
    stray: sum('stray'),
    unresolved: sum('unresolved'),
    staleValues: Object.values(drift.staleValues).reduce((n, v) => n + v, 0),
    profilesToRepair: drift.profiles,
    usersUnmatched: drift.usersUnmatched,
  };
}
