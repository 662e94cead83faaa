import { z } from 'zod';
import { InvalidInputError } from '../errors';
import { runStatuses, runSummary, type RunSummary } from '../runs/runRecord';
import { driftReportName, previewReportName, rejectsReportName } from '../runs/runBlobs';
import { isNotFound } from '../storage/storageErrors';
import type { RunStore } from '../runs/runStore';
import type { ConnectorDeps } from '../runs/connectorDeps';

/** GET /api/runs: the query, validated. */
export const runHistoryQuerySchema = z.strictObject({
  destination: z.string().min(1).optional(),
  status: z.enum(runStatuses).optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  /** From the previous page's `next`. */
  cursor: z.string().min(1).optional(),
});
export type RunHistoryQuery = z.output<typeof runHistoryQuerySchema>;

export interface RunHistoryPage {
  runs: RunSummary[];
  /** Pass as `cursor` for the next page; absent on the last one. */
  next?: string;
}

function encodeCursor(createdAt: string, runId: string): string {
  return Buffer.from(`${createdAt}|${runId}`, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): { createdAt: string; runId: string } {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const at = text.lastIndexOf('|');
  if (at <= 0) throw new InvalidInputError('cursor is not one this API handed out');
  return { createdAt: text.slice(0, at), runId: text.slice(at + 1) };
}

/** The run history, newest first, filtered and paged. */
export async function runHistory(runs: Pick<RunStore, 'listRuns'>, query: RunHistoryQuery, nowMs: number): Promise<RunHistoryPage> {
  const after = query.cursor ? decodeCursor(query.cursor) : undefined;
  const matching = (await runs.listRuns())
    .filter((run) => (!query.destination || run.destination === query.destination) && (!query.status || run.status === query.status))
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.runId.localeCompare(a.runId))
    .filter((run) => !after || run.createdAt < after.createdAt || (run.createdAt === after.createdAt && run.runId < after.runId));
  const page = matching.slice(0, query.limit);
  const last = page.at(-1);
  return {
    runs: page.map((run) => runSummary(run, nowMs)),
    next: matching.length > query.limit && last ? encodeCursor(last.createdAt, last.runId) : undefined,
  };
}

/** A run's rejects report as a stream, or why there is none (yet). */
export async function openRejectsReport(
  deps: ConnectorDeps,
  runId: string,
): Promise<{ kind: 'report'; stream: NodeJS.ReadableStream; bytes?: number } | { kind: 'none'; reason: string }> {
  const run = await deps.runs.get(runId);
  if (!run) return { kind: 'none', reason: `run ${runId} not found` };
  try {
    const download = await deps.storage.stateContainer.getBlobClient(rejectsReportName(runId)).download();
    return { kind: 'report', stream: download.readableStreamBody!, bytes: download.contentLength };
  } catch (error) {
    if (!isNotFound(error)) throw error;
    return { kind: 'none', reason: `run ${runId} is ${run.status}: its rejects report is written when it completes` };
  }
}

/** A dry run's preview report, once the dry run has ended, or a guarded run's; a dry-run reconcile's is its drift report. */
export async function readPreview(deps: ConnectorDeps, runId: string): Promise<{ kind: 'preview'; preview: unknown } | { kind: 'none'; reason: string }> {
  const run = await deps.runs.get(runId);
  if (!run) return { kind: 'none', reason: `run ${runId} not found` };
  // A guarded run writes one too: the preview it was held with, or what it sent within the guard.
  if (!run.dryRun && !(run.staged && !run.reconcile))
    return { kind: 'none', reason: `run ${runId} is not a dry run: its counts are in GET /api/runs/${runId}` };
  try {
    const report = run.reconcile ? driftReportName(runId) : previewReportName(runId);
    const text = (await deps.storage.stateContainer.getBlobClient(report).downloadToBuffer()).toString('utf8');
    return { kind: 'preview', preview: JSON.parse(text) as unknown };
  } catch (error) {
    if (!isNotFound(error)) throw error;
    return { kind: 'none', reason: `run ${runId} is ${run.status}: its preview is written when it has read everything` };
  }
}
