import { z } from 'zod';
import { InvalidInputError } from '../errors';
import { formatIssues } from '../errors';

/** CDM data types CI writes into model.json (and `date`, `time`, which other CDM writers use). */
export const cdmDataTypes = ['string', 'int64', 'double', 'decimal', 'boolean', 'dateTime', 'dateTimeOffset', 'date', 'time', 'GUID', 'JSON'] as const;
export type CdmDataType = (typeof cdmDataTypes)[number];

const dataTypeSchema = z.string().transform((t, ctx): CdmDataType => {
  const match = cdmDataTypes.find((known) => known.toLowerCase() === t.toLowerCase());
  if (match) return match;
  // CDM also knows int16/int32, float, date/time, unclassified: read them by their nearest JSON type.
  const lower = t.toLowerCase();
  if (['int16', 'int32', 'integer', 'int'].includes(lower)) return 'int64';
  if (['float', 'single'].includes(lower)) return 'double';
  if (['unclassified', 'unknown'].includes(lower)) return 'string';
  ctx.addIssue({ code: 'custom', message: `unknown dataType "${t}" (expected one of ${cdmDataTypes.join(', ')})` });
  return z.NEVER;
});

/** CDM's own test data writes booleans as strings ("columnHeaders": "false"); the schema says boolean. Both are read. */
const booleanOrText = z.union([
  z.boolean(),
  z
    .string()
    .regex(/^\s*(true|false)\s*$/i, 'must be true or false')
    .transform((text) => text.trim().toLowerCase() === 'true'),
]);

const fileFormatSettingsSchema = z.looseObject({
  $type: z.string().optional(),
  columnHeaders: booleanOrText.optional(),
  delimiter: z.string().min(1).optional(),
  quoteStyle: z.string().optional(),
  csvStyle: z.string().optional(),
  encoding: z.string().optional(),
});

const partitionSchema = z.looseObject({
  name: z.string().optional(),
  refreshTime: z.string().optional(),
  /** The schema requires only `name`: a partition without a location is skipped, with a note. */
  location: z.string().min(1).optional(),
  fileFormatSettings: fileFormatSettingsSchema.optional(),
});

const attributeSchema = z.looseObject({
  name: z.string().min(1),
  dataType: dataTypeSchema.default('string'),
});

const entitySchema = z.looseObject({
  $type: z.string().optional(),
  name: z.string().min(1),
  attributes: z.array(attributeSchema).default([]),
  partitions: z.array(partitionSchema).default([]),
});

export const modelJsonSchema = z.looseObject({
  name: z.string().optional(),
  modifiedTime: z.string().optional(),
  entities: z.array(entitySchema),
});

export type ModelJson = z.output<typeof modelJsonSchema>;
export type CdmEntity = ModelJson['entities'][number];
export type CdmAttribute = CdmEntity['attributes'][number];
export type CdmPartition = CdmEntity['partitions'][number];
export type FileFormatSettings = z.output<typeof fileFormatSettingsSchema>;

export function parseModelJson(text: string, blobName: string): ModelJson {
  let raw: unknown;
  try {
    raw = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (error) {
    throw new InvalidInputError(`${blobName} is not valid JSON: ${(error as Error).message}`);
  }
  const parsed = modelJsonSchema.safeParse(raw);
  if (!parsed.success) throw new InvalidInputError(formatIssues(blobName, parsed.error));
  return parsed.data;
}

export function findEntity(model: ModelJson, table: string): CdmEntity | undefined {
  return model.entities.find((e) => e.name === table) ?? model.entities.find((e) => e.name.toLowerCase() === table.toLowerCase());
}

function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) < 0x20) return true;
  return false;
}

/** A model.json larger than this is refused before it is read into memory (a real one for 32 segments is a few MiB). */
export const MODEL_JSON_MAX_BYTES = 16 * 1024 * 1024;
const BLOB_NAME_MAX_CHARS = 1024;

/** The export container, as its client knows it: `<scheme>://<host>/<container>` (Azurite: `/<account>/<container>`). */
export interface ContainerAddress {
  url: string;
  containerName: string;
}

/** `<account>.dfs.core.windows.net` is the same account as `<account>.blob.core.windows.net` (CI may write either). */
export function sameAccountHost(a: string, b: string): boolean {
  const blobHost = (host: string) => host.toLowerCase().replace(/\.dfs\.core\.windows\.net(:\d+)?$/, '.blob.core.windows.net$1');
  return blobHost(a) === blobHost(b);
}

/** Query parameters of a shared access signature: a location carrying one carries a credential. */
const SAS_PARAMETERS = new Set([
  'sig',
  'sv',
  'se',
  'st',
  'sp',
  'sr',
  'spr',
  'ss',
  'srt',
  'sip',
  'skoid',
  'sktid',
  'skt',
  'ske',
  'sks',
  'skv',
  'saoid',
  'suoid',
  'scid',
  'sdd',
  'ses',
]);
/** A blob snapshot's time as Azure writes it: `2018-11-14T19:37:51.7526830Z`. */
const SNAPSHOT_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$/;

/** Where a partition is: a blob of the export container, and the snapshot of it when the location names one. */
export interface PartitionAddress {
  blobName: string;
  snapshot?: string;
}

/**
 * model.json locations are full blob URIs (`https://acct.blob.core.windows.net/<container>/<path>`,
 * or Azurite's `http://127.0.0.1:10000/devstoreaccount1/<container>/<path>`). Answers the blob name
 * inside the export container — and only there: a location on another account or in another
 * container, or with a `.`/`..` segment (encoded or not), is refused, so a hostile model.json cannot
 * make the connector read outside the export. A location without a scheme is a path inside the
 * container. Power BI dataflows name a blob snapshot (`?snapshot=<time>`): that snapshot is what is
 * read. A shared access signature is a credential and refused; any other query too, saying how.
 */
export function partitionAddress(location: string, container: ContainerAddress): PartitionAddress {
  const refuse = (why: string) => new InvalidInputError(`partition location ${JSON.stringify(location.replace(/\?.*$/, '?…').slice(0, 300))} ${why}`);
  const query = /\?([^#]*)/.exec(location)?.[1];
  let snapshot: string | undefined;
  if (query !== undefined) {
    // The schema's location is a URI: a path with a query names no blob of the container.
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) throw refuse('has a query but no scheme: only a full blob URI may name a snapshot');
    const params = [...new URLSearchParams(query)].map(([name, value]) => [name.toLowerCase(), value] as const);
    if (params.some(([name]) => SAS_PARAMETERS.has(name)))
      throw refuse('carries a shared access signature: a credential, which the connector never reads from a file (it reads the export with its own identity)');
    const others = params.filter(([name]) => name !== 'snapshot').map(([name]) => name);
    if (others.length)
      throw refuse(`has a query (${others.join(', ')}) the connector does not read: only ?snapshot=<time> is; export the partition without it`);
    // Query names are matched as Azure matches them, whatever their case.
    snapshot = params.find(([name]) => name === 'snapshot')?.[1];
    if (snapshot !== undefined && !SNAPSHOT_TIME.test(snapshot))
      throw refuse('names a snapshot whose time is not a blob snapshot time (2018-11-14T19:37:51.7526830Z)');
  }
  const blobName = blobNameFromLocation(query === undefined ? location : location.replace(/\?[^#]*/, ''), container);
  return snapshot ? { blobName, snapshot } : { blobName };
}

/** The blob name of a location without a query (partitionAddress reads the query). */
export function blobNameFromLocation(location: string, container: ContainerAddress): string {
  const refuse = (why: string) => new InvalidInputError(`partition location ${JSON.stringify(location.slice(0, 300))} ${why}`);
  const absolute = /^[a-z][a-z0-9+.-]*:\/\//i.exec(location);
  let rawPath = location;
  if (absolute) {
    let url: URL;
    let home: URL;
    try {
      url = new URL(location);
      home = new URL(container.url);
    } catch {
      throw refuse('is not a URL');
    }
    if (url.protocol !== home.protocol && !(url.protocol === 'https:' && home.protocol === 'http:')) throw refuse(`uses ${url.protocol}`);
    if (!sameAccountHost(url.host, home.host)) throw refuse(`is not on the storage account of the export container (${home.host})`);
    if (url.username || url.password || url.search || url.hash) throw refuse('carries credentials, a query or a fragment');
    // The raw path, before URL normalization resolves dot segments away.
    rawPath = location
      .slice(absolute[0].length)
      .replace(/^[^/]*/, '')
      .replace(/[?#].*$/, '');
    const homePath = home.pathname.replace(/\/+$/, '');
    const accountPrefix = homePath.slice(0, homePath.length - container.containerName.length);
    if (!rawPath.startsWith(`${accountPrefix}`)) throw refuse(`is not in the export container "${container.containerName}"`);
    rawPath = rawPath.slice(accountPrefix.length);
  }
  let segments: string[];
  try {
    segments = rawPath
      .replace(/^\/+/, '')
      .split('/')
      .map((segment) => decodeURIComponent(segment));
  } catch {
    throw refuse('has a malformed %-escape');
  }
  if (absolute) {
    if (segments[0] !== container.containerName) throw refuse(`is not in the export container "${container.containerName}"`);
    segments = segments.slice(1);
  }
  if (segments.length === 0 || segments.some((s) => s === '' || s === '.' || s === '..' || /[\\/]/.test(s) || hasControlCharacter(s))) {
    throw refuse('has an empty, "." or ".." segment, or a character a blob path cannot hold');
  }
  const blobName = segments.join('/');
  if (blobName.length > BLOB_NAME_MAX_CHARS) throw refuse(`names a blob longer than ${BLOB_NAME_MAX_CHARS} characters`);
  return blobName;
}
