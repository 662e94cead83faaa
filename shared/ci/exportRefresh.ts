import { createHash } from 'node:crypto';
import type { ContainerClient } from '@azure/storage-blob';
import type { DestinationConfig } from '../config/syncConfig';
import { segmentAttribute } from '../config/syncConfig';
import { ExportNotReadyError, InvalidInputError } from '../errors';
import { modelJsonPath, type ExportLocation } from './layout';
import { z } from 'zod';
import { cdmDataTypes, findEntity, MODEL_JSON_MAX_BYTES, parseModelJson, partitionAddress, type ModelJson } from './modelJson';
import { csvFormatOf } from './partitionReader';

export const partitionRefSchema = z.strictObject({
  blobName: z.string().min(1),
  /** The blob snapshot the location names (Power BI dataflows write `?snapshot=<time>`). */
  snapshot: z.string().min(1).optional(),
  format: z.strictObject({
    columnHeaders: z.boolean(),
    delimiter: z.string().min(1),
    encoding: z.enum(['utf8', 'utf16le', 'utf16be', 'windows1252', 'latin1', 'ascii']),
    /** QuoteStyle.None: quote characters have no significance (absent in runs recorded before: csv). */
    quoteStyle: z.enum(['csv', 'none']).optional(),
    /** CsvStyle.QuoteAfterDelimiter: a quote opens a value only right after a delimiter (absent: always). */
    csvStyle: z.enum(['quoteAlways', 'quoteAfterDelimiter']).optional(),
  }),
  sizeBytes: z.number().int().min(0),
  /** The run reads the partition as it was when the run was created: a rewrite fails the run. */
  etag: z.string(),
});
export type PartitionRef = z.output<typeof partitionRefSchema>;

/** One configured segment of a refresh: its columns and the partitions to read. What a run's sources blob holds. */
export const segmentRefreshSchema = z.strictObject({
  table: z.string().min(1),
  attribute: z.string().min(1),
  brazeSegmentId: z.string().min(1),
  attributes: z.array(z.strictObject({ name: z.string().min(1), dataType: z.enum(cdmDataTypes) })),
  partitions: z.array(partitionRefSchema),
  /** The destination's erasure table: its rows are users to delete, no segment's members. */
  erasure: z.literal(true).optional(),
});
export type SegmentRefresh = z.output<typeof segmentRefreshSchema>;

/** The membership name an erasure table's rows carry while a run reads them: not a Braze attribute name (those never start with `$`). */
export const ERASURE_ATTRIBUTE = '$erase';

/** One refresh of one export destination: the partitions of every configured segment. */
export interface ExportRefresh extends ExportLocation {
  modelJsonPath: string;
  /** Stable identity of this refresh: the same partitions give the same key. */
  refreshKey: string;
  /** Newest run folder (`YYYY/MM/DD/HHMM`) among the partitions, for people to read. */
  label: string;
  /**
   * When CI took this snapshot (ISO 8601, UTC), to order refreshes: the newest snapshot wins in
   * Braze. Empty when nothing tells (then no refresh is taken for older than another).
   */
  refreshTime: string;
  segments: SegmentRefresh[];
  /** What was left out of model.json and why (a partition without a location), for the log. */
  notes: string[];
}

/** Reads model.json into memory, but never more than MODEL_JSON_MAX_BYTES of it. */
async function readCapped(container: ContainerClient, path: string): Promise<string> {
  const download = await container.getBlobClient(path).download();
  const tooLarge = () => new InvalidInputError(`${path} is larger than ${MODEL_JSON_MAX_BYTES / 1024 / 1024} MiB; refused`);
  if ((download.contentLength ?? 0) > MODEL_JSON_MAX_BYTES) {
    download.readableStreamBody?.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of download.readableStreamBody as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > MODEL_JSON_MAX_BYTES) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Finds every `CustomerInsights_*` instance that has a model.json for this destination. */
export async function discoverExports(container: ContainerClient, destination: DestinationConfig): Promise<ExportLocation[]> {
  const instances: string[] = [];
  if (destination.instance) {
    instances.push(destination.instance);
  } else {
    for await (const item of container.listBlobsByHierarchy('/', { prefix: 'CustomerInsights_' })) {
      if (item.kind === 'prefix') instances.push(item.name.replace(/\/$/, ''));
    }
  }
  const found: ExportLocation[] = [];
  for (const instance of instances) {
    const location = { instance, destination: destination.name };
    if (await container.getBlobClient(modelJsonPath(location)).exists()) found.push(location);
  }
  return found;
}

/**
 * Why `discoverExports` found no refresh for a destination, in terms a person can act on: the
 * `instance` filter names another instance than the container holds, the destination's folder has
 * another name, or the files sit one level off (a copy of the destination folder, or of its parent).
 */
export async function whyNoExport(container: ContainerClient, destination: DestinationConfig): Promise<string> {
  const wanted = `${destination.instance ?? 'CustomerInsights_*'}/${destination.name}/model.json`;
  const top: string[] = [];
  for await (const item of container.listBlobsByHierarchy('/')) {
    top.push(item.name);
    if (top.length >= 50) break;
  }
  const where = `no ${wanted} in container ${container.containerName}`;
  if (top.length === 0) return `${where}: the container is empty`;
  const instances = top.filter((name) => name.startsWith('CustomerInsights_') && name.endsWith('/')).map((name) => name.slice(0, -1));
  if (instances.length === 0) {
    return `${where}: it holds no CustomerInsights_* folder (it holds ${top.slice(0, 5).join(', ')}${top.length > 5 ? ', …' : ''}); CI writes CustomerInsights_<instance>/<destination>/model.json, so upload the folder that holds the CustomerInsights_* folders`;
  }
  // The instances that do hold this destination's model.json, as discovery without the filter finds them.
  const holding = destination.instance ? (await discoverExports(container, { ...destination, instance: undefined })).map((l) => l.instance) : [];
  if (holding.length) {
    return `${where}: the destination's "instance" is ${destination.instance}, and ${destination.name}/model.json is under ${holding.join(', ')} (set "instance" to that folder's name, or leave it out to take every instance)`;
  }
  const destinations = new Set<string>();
  for (const instance of destination.instance ? [destination.instance].filter((i) => instances.includes(i)) : instances) {
    for await (const item of container.listBlobsByHierarchy('/', { prefix: `${instance}/` }))
      if (item.kind === 'prefix') destinations.add(item.name.slice(instance.length + 1, -1));
  }
  if (destinations.size) {
    return `${where}: the export's destination folders are ${[...destinations].join(', ')} (the config's destination "name" must be the folder's name)`;
  }
  return `${where}${destination.instance ? ` (it holds ${instances.join(', ')})` : ''}`;
}

export async function resolveRefresh(container: ContainerClient, location: ExportLocation, destination: DestinationConfig): Promise<ExportRefresh> {
  const path = modelJsonPath(location);
  let text: string;
  try {
    text = await readCapped(container, path);
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) throw new ExportNotReadyError(`${path} does not exist`);
    throw error;
  }
  const model = parseModelJson(text, path);
  const segments: SegmentRefresh[] = [];
  const notes: string[] = [];
  const tables = [
    ...destination.segments.map((segment) => ({ table: segment.table, attribute: segmentAttribute(segment), brazeSegmentId: segment.brazeSegmentId })),
    ...(destination.erasure
      ? [{ table: destination.erasure.table, attribute: ERASURE_ATTRIBUTE, brazeSegmentId: destination.erasure.table, erasure: true as const }]
      : []),
  ];
  for (const segment of tables) {
    const entity = findEntity(model, segment.table);
    if (!entity) {
      throw new InvalidInputError(`${path} has no entity "${segment.table}" (it has: ${model.entities.map((e) => e.name).join(', ') || 'none'})`);
    }
    if (entity.attributes.length === 0) throw new InvalidInputError(`${path}: entity "${entity.name}" lists no attributes`);
    let partitions: PartitionRef[];
    // The schema requires only a partition's name: one without a location names no file to read.
    const located = entity.partitions.filter((p) => p.location !== undefined);
    for (const p of entity.partitions)
      if (p.location === undefined) notes.push(`${path}: entity "${entity.name}" partition "${p.name ?? '(no name)'}" has no location; skipped`);
    if (located.length > 0) {
      partitions = await Promise.all(
        located.map(async (p) => {
          const address = partitionAddress(p.location!, container);
          return describePartition(container, address, csvFormatOf(p.fileFormatSettings, `${path} partition ${p.name ?? address.blobName}`), path);
        }),
      );
    } else {
      partitions = await newestRunFolderPartitions(container, location, entity.name, path);
    }
    segments.push({
      table: segment.table,
      attribute: segment.attribute,
      brazeSegmentId: segment.brazeSegmentId,
      attributes: entity.attributes.map((a) => ({ name: a.name, dataType: a.dataType })),
      partitions,
      ...('erasure' in segment ? { erasure: segment.erasure } : {}),
    });
  }
  const identity = segments.flatMap((s) => s.partitions.map((p) => `${s.table}|${p.blobName}${p.snapshot ? `?snapshot=${p.snapshot}` : ''}|${p.etag}`)).sort();
  const refreshKey = createHash('sha256')
    .update(`${path}\n${identity.join('\n')}`)
    .digest('hex')
    .slice(0, 32);
  const folders = segments
    .flatMap((s) => s.partitions.map((p) => runFolderOf(p.blobName)))
    .filter(Boolean)
    .sort();
  const refreshTime = snapshotTime(folders.at(-1), model, destination);
  return { ...location, modelJsonPath: path, refreshKey, label: folders.at(-1) ?? 'unknown', refreshTime, segments, notes };
}

/**
 * When the snapshot was taken, from what CI says about it — never from when its blobs were written,
 * which a late copy or a re-upload by hand makes look new. CI names each refresh's run folder after
 * its time (`YYYY/MM/DD/HHMM`, UTC): the newest folder among the partitions read. Without CI's
 * layout (a CDM folder written by other tools), the newest `refreshTime` of the configured entities'
 * partitions, else model.json's `modifiedTime`.
 */
function snapshotTime(newestFolder: string | undefined, model: ModelJson, destination: DestinationConfig): string {
  const fromFolder = newestFolder ? runFolderTime(newestFolder) : undefined;
  if (fromFolder) return fromFolder;
  const times: string[] = [];
  for (const segment of destination.segments) {
    for (const partition of findEntity(model, segment.table)?.partitions ?? []) {
      const time = isoTime(partition.refreshTime);
      if (time) times.push(time);
    }
  }
  return times.sort().at(-1) ?? isoTime(model.modifiedTime) ?? '';
}

/** `YYYY/MM/DD/HHMM` → ISO 8601 UTC, or undefined for a folder that is no date. */
export function runFolderTime(folder: string): string | undefined {
  const match = /^(\d{4})\/(\d{2})\/(\d{2})\/(\d{2})(\d{2})$/.exec(folder);
  if (!match) return undefined;
  const [, year, month, day, hour, minute] = match.map(Number);
  const time = new Date(Date.UTC(year, month - 1, day, hour, minute));
  // Date.UTC rolls 2026/02/31 over into March: such a folder is no date.
  if (time.getUTCMonth() !== month - 1 || time.getUTCDate() !== day || hour > 23 || minute > 59) return undefined;
  return time.toISOString();
}

function isoTime(text: string | undefined): string | undefined {
  if (!text) return undefined;
  // A time without a zone is UTC, as CI writes it, whatever the machine's time zone.
  const ms = Date.parse(/^\d{4}-\d{2}-\d{2}T[\d:.]+$/.test(text) ? `${text}Z` : text);
  return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
}

/** A partition's blob (or the snapshot of it the location names). */
export function partitionBlob(container: ContainerClient, partition: { blobName: string; snapshot?: string }) {
  const blob = container.getBlobClient(partition.blobName);
  return partition.snapshot ? blob.withSnapshot(partition.snapshot) : blob;
}

async function describePartition(
  container: ContainerClient,
  address: { blobName: string; snapshot?: string },
  format: PartitionRef['format'],
  modelPath: string,
): Promise<PartitionRef> {
  const what = address.snapshot ? `${address.blobName} (snapshot ${address.snapshot})` : address.blobName;
  try {
    const properties = await partitionBlob(container, address).getProperties();
    return { ...address, format, sizeBytes: properties.contentLength ?? 0, etag: properties.etag ?? '' };
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) {
      throw new ExportNotReadyError(`${modelPath} lists partition ${what}, which does not exist (export still being written, or removed)`);
    }
    throw error;
  }
}

/** When model.json lists no partitions, take the CSV files of the table's newest run folder. */
async function newestRunFolderPartitions(container: ContainerClient, location: ExportLocation, table: string, modelPath: string): Promise<PartitionRef[]> {
  let prefix = `${location.instance}/${location.destination}/${table}/`;
  for (const pattern of [/^\d{4}$/, /^\d{2}$/, /^\d{2}$/, /^\d{4}$/]) {
    const names: string[] = [];
    for await (const item of container.listBlobsByHierarchy('/', { prefix })) {
      if (item.kind !== 'prefix') continue;
      const name = item.name.slice(prefix.length).replace(/\/$/, '');
      if (pattern.test(name)) names.push(name);
    }
    if (names.length === 0) throw new ExportNotReadyError(`${modelPath}: entity "${table}" lists no partitions and ${prefix} holds no run folder`);
    prefix += `${names.sort().at(-1)}/`;
  }
  const partitions: PartitionRef[] = [];
  for await (const blob of container.listBlobsFlat({ prefix })) {
    if (!blob.name.toLowerCase().endsWith('.csv')) continue;
    partitions.push({
      blobName: blob.name,
      format: csvFormatOf(undefined, blob.name),
      sizeBytes: blob.properties.contentLength ?? 0,
      etag: blob.properties.etag ?? '',
    });
  }
  if (partitions.length === 0) throw new ExportNotReadyError(`${prefix} holds no CSV partition`);
  return partitions.sort((a, b) => a.blobName.localeCompare(b.blobName, 'en', { numeric: true }));
}

function runFolderOf(blobName: string): string {
  const match = /\/(\d{4}\/\d{2}\/\d{2}\/\d{4})\//.exec(blobName);
  return match ? match[1] : '';
}
