import type { ContainerClient } from '@azure/storage-blob';

/**
 * The rejects report: one CSV line per row (or field) that did not reach Braze as read, with the
 * reason. Identified by where the row is in the export, never by e-mail or name, so the report can
 * be shared with whoever fixes the data in CI.
 */
export interface RejectLine {
  /** `rejected` (the row was not sent), `field_dropped` (the row was sent without that value), `failed` (Braze never took it). */
  outcome: 'rejected' | 'field_dropped' | 'failed';
  source: string;
  row: number | '';
  identifier: string;
  reason: string;
}

export const REJECTS_HEADER = 'outcome,source,row,identifier,reason\n';

function csvField(value: string | number): string {
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function rejectCsvLine(line: RejectLine): string {
  return [line.outcome, line.source, line.row, line.identifier, line.reason].map(csvField).join(',') + '\n';
}

export function runFolder(runId: string): string {
  return `runs/${runId}`;
}

/** Where one batch's rejects go until the run ends; the batch id makes a replay overwrite, not append. */
export function rejectsPartName(runId: string, part: string): string {
  return `${runFolder(runId)}/rejects-parts/${part}.csv`;
}

export function rejectsReportName(runId: string): string {
  return `${runFolder(runId)}/rejects.csv`;
}

export async function writeRejectsPart(container: ContainerClient, runId: string, part: string, lines: RejectLine[]): Promise<void> {
  const blob = container.getBlockBlobClient(rejectsPartName(runId, part));
  if (lines.length === 0) {
    await blob.deleteIfExists();
    return;
  }
  const text = lines.map(rejectCsvLine).join('');
  await blob.upload(text, Buffer.byteLength(text), { blobHTTPHeaders: { blobContentType: 'text/csv; charset=utf-8' } });
}

/** Joins the parts into one report per run. Streams, so a run with many rejects stays in bounded memory. */
export async function composeRejectsReport(container: ContainerClient, runId: string): Promise<{ blobName: string; lines: number }> {
  const { PassThrough } = await import('node:stream');
  const out = new PassThrough();
  const target = container.getBlockBlobClient(rejectsReportName(runId));
  const upload = target.uploadStream(out, 1024 * 1024, 2, { blobHTTPHeaders: { blobContentType: 'text/csv; charset=utf-8' } });
  let lines = 0;
  try {
    out.write(REJECTS_HEADER);
    for await (const item of container.listBlobsFlat({ prefix: `${runFolder(runId)}/rejects-parts/` })) {
      const part = await container.getBlobClient(item.name).downloadToBuffer();
      lines += part
        .toString('utf8')
        .split('\n')
        .filter((l) => l.length > 0).length;
      if (!out.write(part)) await new Promise((resolve) => out.once('drain', resolve));
    }
  } finally {
    out.end();
  }
  await upload;
  return { blobName: rejectsReportName(runId), lines };
}
