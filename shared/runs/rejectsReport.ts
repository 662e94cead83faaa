import type { ContainerClient } from '@azure/storage-blob';
import { BlobLineWriter } from '../storage/blobLineWriter';
import { REJECTS_PARTS, rejectsReportName, runFolder, splitPartName } from './runBlobs';

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

/** Writes one batch's reject lines; nothing when there are none. */
export async function writeRejectsPart(container: ContainerClient, blobName: string, lines: RejectLine[]): Promise<void> {
  if (lines.length === 0) return;
  const text = lines.map(rejectCsvLine).join('');
  await container.getBlockBlobClient(blobName).upload(text, Buffer.byteLength(text), { blobHTTPHeaders: { blobContentType: 'text/csv; charset=utf-8' } });
}

/**
 * Joins the parts that count into one report per run: each unit's and each batch's part written
 * by the owner that closed it (`owners`: part id → owner token, e.g. `map-0003`, `shard-0001`,
 * `batch-s0001-0000002`). Parts of writers that lost their claim are left out. Input rejects come
 * first (by partition), then duplicates and dropped fields (by shard), then what Braze refused.
 * Streams, so a run with many rejects stays in bounded memory.
 */
export async function composeRejectsReport(
  container: ContainerClient,
  runId: string,
  owners: Map<string, string>,
): Promise<{ blobName: string; lines: number }> {
  const out = new BlobLineWriter(container, rejectsReportName(runId), 'text/csv; charset=utf-8');
  const order = (name: string) => (name.startsWith('map-') ? 0 : name.startsWith('shard-') ? 1 : 2);
  let lines = 0;
  try {
    await out.write(REJECTS_HEADER);
    const names: string[] = [];
    const prefix = `${runFolder(runId)}/${REJECTS_PARTS}/`;
    for await (const item of container.listBlobsFlat({ prefix })) {
      const part = splitPartName(item.name.slice(prefix.length));
      if (part && owners.get(part.id) === part.token) names.push(item.name);
    }
    names.sort((a, b) => order(a.slice(prefix.length)) - order(b.slice(prefix.length)) || a.localeCompare(b));
    for (const name of names) {
      const part = await container.getBlobClient(name).downloadToBuffer();
      lines += part
        .toString('utf8')
        .split('\n')
        .filter((l) => l.length > 0).length;
      await out.write(part);
    }
  } catch (error) {
    await out.abort(error);
    throw error;
  }
  await out.close();
  return { blobName: rejectsReportName(runId), lines };
}
