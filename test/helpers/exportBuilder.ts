import type { ContainerClient } from '@azure/storage-blob';

export interface ExportColumn {
  name: string;
  dataType: string;
}

export interface ExportSegment {
  table: string;
  /** Each partition's CSV text, exactly as it should be stored. */
  partitions: string[];
  fileFormatSettings?: Record<string, unknown>;
  /** Run folder name; CI writes YYYY/MM/DD/HHMM. */
  runFolder?: string;
}

export const PROFILE_COLUMNS: ExportColumn[] = [
  { name: 'CustomerId', dataType: 'GUID' },
  { name: 'EMail', dataType: 'string' },
  { name: 'FirstName', dataType: 'string' },
  { name: 'LoyaltyPoints', dataType: 'int64' },
];

/** Quote-always CSV, CDM style, no header. */
export function csv(rows: string[][], options: { crlf?: boolean; bom?: boolean } = {}): string {
  const text = rows.map((r) => r.map((v) => `"${v.replace(/"/g, '""')}"`).join(',')).join(options.crlf ? '\r\n' : '\n') + (options.crlf ? '\r\n' : '\n');
  return (options.bom ? '\ufeff' : '') + text;
}

/**
 * Writes an export the way CI lays it out: partitions under `<table>/<YYYY>/<MM>/<DD>/<HHMM>/`, then
 * model.json (last, as CI does) listing them with full blob URIs.
 */
export async function writeExport(
  container: ContainerClient,
  options: { instance?: string; destination: string; columns?: ExportColumn[]; segments: ExportSegment[]; omitPartitions?: boolean; modelJsonText?: string },
): Promise<{ modelJsonPath: string; partitionNames: string[] }> {
  await container.createIfNotExists();
  const instance = options.instance ?? 'CustomerInsights_0a1b2c3d';
  const columns = options.columns ?? PROFILE_COLUMNS;
  const partitionNames: string[] = [];
  const entities = [];
  for (const segment of options.segments) {
    const folder = segment.runFolder ?? '2026/11/28/0600';
    const partitions = [];
    for (let i = 0; i < segment.partitions.length; i++) {
      const name = `${instance}/${options.destination}/${segment.table}/${folder}/${segment.table}_${i + 1}.csv`;
      await container.getBlockBlobClient(name).upload(segment.partitions[i], Buffer.byteLength(segment.partitions[i]));
      partitionNames.push(name);
      partitions.push({
        name: `${segment.table}_${i + 1}`,
        refreshTime: '2026-11-28T06:00:00Z',
        location: `${container.url}/${name}`,
        ...(segment.fileFormatSettings ? { fileFormatSettings: segment.fileFormatSettings } : {}),
      });
    }
    entities.push({ $type: 'LocalEntity', name: segment.table, attributes: columns, partitions: options.omitPartitions ? [] : partitions });
  }
  const modelJsonPath = `${instance}/${options.destination}/model.json`;
  const text = options.modelJsonText ?? JSON.stringify({ name: options.destination, version: '1.0', entities });
  await container.getBlockBlobClient(modelJsonPath).upload(text, Buffer.byteLength(text));
  return { modelJsonPath, partitionNames };
}
