import { z } from 'zod';
import { InvalidInputError } from '../errors';
import { formatIssues } from '../config/settings';

/** CDM data types CI writes into model.json. */
export const cdmDataTypes = ['string', 'int64', 'double', 'decimal', 'boolean', 'dateTime', 'dateTimeOffset', 'GUID', 'JSON'] as const;
export type CdmDataType = (typeof cdmDataTypes)[number];

const dataTypeSchema = z.string().transform((t, ctx): CdmDataType => {
  const match = cdmDataTypes.find((known) => known.toLowerCase() === t.toLowerCase());
  if (match) return match;
  // CDM also knows int16/int32, float, date/time, unclassified: read them by their nearest JSON type.
  const lower = t.toLowerCase();
  if (['int16', 'int32', 'integer', 'int'].includes(lower)) return 'int64';
  if (['float', 'single'].includes(lower)) return 'double';
  if (['date', 'time'].includes(lower)) return 'dateTime';
  if (['unclassified', 'unknown'].includes(lower)) return 'string';
  ctx.addIssue({ code: 'custom', message: `unknown dataType "${t}" (expected one of ${cdmDataTypes.join(', ')})` });
  return z.NEVER;
});

const fileFormatSettingsSchema = z.looseObject({
  $type: z.string().optional(),
  columnHeaders: z.boolean().optional(),
  delimiter: z.string().min(1).optional(),
  quoteStyle: z.string().optional(),
  csvStyle: z.string().optional(),
  encoding: z.string().optional(),
});

const partitionSchema = z.looseObject({
  name: z.string().optional(),
  refreshTime: z.string().optional(),
  location: z.string().min(1),
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

/**
 * model.json locations are full blob URIs (`https://acct.blob.core.windows.net/<container>/<path>`,
 * or Azurite's `http://127.0.0.1:10000/devstoreaccount1/<container>/<path>`). Returns the blob name
 * inside our export container.
 */
export function blobNameFromLocation(location: string, container: string): string {
  let path = location;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    path = new URL(location).pathname;
  }
  const segments = path
    .split('/')
    .filter(Boolean)
    .map((s) => decodeURIComponent(s));
  const at = segments.indexOf(container);
  if (at >= 0) return segments.slice(at + 1).join('/');
  // Exports copied between accounts keep their layout: the blob name starts at the instance folder.
  const instance = segments.findIndex((s) => s.startsWith('CustomerInsights_'));
  if (instance >= 0) return segments.slice(instance).join('/');
  // A relative location (no container in it) is taken as a blob name as is.
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) return segments.join('/');
  throw new InvalidInputError(`partition location ${location} is not in the export container "${container}"`);
}
