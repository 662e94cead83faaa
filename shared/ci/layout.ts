/**
 * The blob layout CI writes:
 * `CustomerInsights_<instanceId>/<ExportDestinationName>/<TableName>/<YYYY>/<MM>/<DD>/<HHMM>/<file>.csv`
 * with `model.json` at the destination level.
 */

export const MODEL_JSON = 'model.json';

export interface ExportLocation {
  /** `CustomerInsights_<instanceId>` */
  instance: string;
  destination: string;
}

export interface PartitionPath extends ExportLocation {
  table: string;
  /** `YYYY/MM/DD/HHMM`, sortable as text. */
  runFolder: string;
}

export function modelJsonPath(location: ExportLocation): string {
  return `${location.instance}/${location.destination}/${MODEL_JSON}`;
}

/** Reads the instance and destination of any blob under an export (model.json or a partition). */
export function parseExportBlobName(blobName: string): (ExportLocation & { partition?: PartitionPath }) | undefined {
  const parts = blobName.split('/');
  if (parts.length < 3 || !parts[0].startsWith('CustomerInsights_')) return undefined;
  const location = { instance: parts[0], destination: parts[1] };
  if (parts.length === 3) return parts[2] === MODEL_JSON ? location : undefined;
  const runParts = parts.slice(3, 7);
  if (parts.length >= 8 && /^\d{4}$/.test(runParts[0]) && /^\d{2}$/.test(runParts[1]) && /^\d{2}$/.test(runParts[2]) && /^\d{4}$/.test(runParts[3])) {
    return { ...location, partition: { ...location, table: parts[2], runFolder: runParts.join('/') } };
  }
  return location;
}
