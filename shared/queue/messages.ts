import { gunzipSync, gzipSync, constants as zlibConstants } from 'node:zlib';
import { z } from 'zod';
import { UnreadableMessageError } from '../errors';
import { formatIssues } from '../errors';

/** Azure Storage queues take at most 64 KiB per message, counted on the encoded text. */
export const QUEUE_MESSAGE_MAX_BYTES = 64 * 1024;
/**
 * What a message may inflate to. The packer's messages stay far below (a few hundred KiB); the
 * bound keeps a crafted message from inflating into gigabytes inside a worker.
 */
export const MESSAGE_MAX_INFLATED_BYTES = 4 * 1024 * 1024;

/** A plain object; the Braze object inside is checked by Braze, and a full schema walk per profile costs more than the send. */
const attributesRecord = z.custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'must be an attributes object');

export const identifierSchema = z.union([
  z.strictObject({ external_id: z.string().min(1) }),
  z.strictObject({ email: z.string().min(3) }),
  z.strictObject({ user_alias: z.strictObject({ alias_name: z.string().min(1), alias_label: z.string().min(1) }) }),
]);

/** Where a profile came from, for the rejects report: a partition (by its index in the run's list) and row, or a segment exit. */
export const profileSourceSchema = z.union([
  /** `line`: the physical line of the file the row starts on, when known. */
  z.strictObject({ partition: z.number().int().min(0), row: z.number().int().min(1), line: z.number().int().min(1).optional() }),
  z.literal('leaver'),
]);
export type ProfileSource = z.output<typeof profileSourceSchema>;

/** One profile to send: its identifier and attributes, plus what is needed to account for it. */
export const batchProfileSchema = z.strictObject({
  /** Hash of the profile key, matching the delivered-state record. */
  hash: z.string().length(16),
  identifier: identifierSchema,
  /** The attributes to write, without the identifier. */
  attributes: attributesRecord,
  /** Input rows this profile stands for (one per segment it is in); 0 for a leaver. */
  rows: z.number().int().min(0),
  source: profileSourceSchema,
  /**
   * The e-mail-only profile holding this address becomes this external_id's (POST /users/identify,
   * emails_to_identify) before the attributes are written.
   */
  identify: z.strictObject({ email: z.string().min(3) }).optional(),
  /** Braze has this profile under another spelling of its GUID: renamed to this external_id first (POST /users/external_ids/rename). */
  rename: z.strictObject({ from: z.string().min(1) }).optional(),
  /** The user is deleted from Braze (POST /users/delete), nothing written: the destination's erasure table lists it. */
  erase: z.literal(true).optional(),
});
export type BatchProfile = z.output<typeof batchProfileSchema>;

export const brazeBatchMessageSchema = z.strictObject({
  kind: z.literal('brazeBatch'),
  runId: z.string().min(1),
  /** Deterministic per run: a replayed or duplicated message has the same id. */
  batchId: z.string().min(1),
  /** How often this batch was handed back for later because Braze could not take it in time. */
  deferrals: z.number().int().min(0).default(0),
  /** Re-queued by a resume: the batch was parked or failed before and may be sent again. */
  resumed: z.boolean().optional(),
  profiles: z.array(batchProfileSchema).min(1),
});
export type BrazeBatchMessage = z.output<typeof brazeBatchMessageSchema>;

export const runMessageSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('startRun'),
    runId: z.string().min(1),
    /** A waiting run's own next look (epoch ms it was sent): copies older than the run's last look are dropped. */
    lookAt: z.number().int().min(0).optional(),
  }),
  /** Read one partition and route its rows to their shards. */
  z.strictObject({ kind: z.literal('mapPartition'), runId: z.string().min(1), partition: z.number().int().min(0) }),
  /** Diff one shard against its slice of the state and enqueue its batches. */
  z.strictObject({ kind: z.literal('diffShard'), runId: z.string().min(1), shard: z.number().int().min(0) }),
  /** A reconcile: ask Braze to export one segment, wait for it, and route its users to the shards. */
  z.strictObject({ kind: z.literal('exportSegment'), runId: z.string().min(1), segment: z.number().int().min(0) }),
  z.strictObject({ kind: z.literal('finalizeRun'), runId: z.string().min(1) }),
  /** Tell one webhook of a destination about a run, with the run's summary. */
  z.strictObject({
    kind: z.literal('notify'),
    runId: z.string().min(1),
    event: z.string().min(1),
    destination: z.string().min(1),
    instance: z.string().min(1).optional(),
    /** The webhook's place in the destination's `notify`: its URL is looked up in the config, never carried here. */
    target: z.number().int().min(0),
    summary: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])),
    /** Attempts made so far; each failure comes back later, until the last. */
    attempt: z.number().int().min(0).default(0),
  }),
]);
export type RunMessage = z.output<typeof runMessageSchema>;

/**
 * One encoding for every message: gzip-compressed JSON in base64 (several Braze requests' worth
 * fits in 64 KiB). host.json sets the queue trigger's messageEncoding to none, so the function
 * gets this text as written.
 */
export function encodeMessage(message: BrazeBatchMessage | RunMessage): string {
  return gzipText(JSON.stringify(message));
}

export function gzipText(json: string): string {
  return gzipSync(Buffer.from(json, 'utf8'), { level: zlibConstants.Z_BEST_SPEED }).toString('base64');
}

function decodeJson(payload: unknown): unknown {
  if (typeof payload !== 'string' && !Buffer.isBuffer(payload)) throw new Error(`expected base64 text, got ${payload === null ? 'null' : typeof payload}`);
  const text = (Buffer.isBuffer(payload) ? payload.toString('utf8') : payload).trim();
  // Its ends only: a message is ~60 KiB, and a bad character inside fails gzip's own check below.
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+$/.test(text.slice(0, 64)) || !/^[A-Za-z0-9+/]*={0,2}$/.test(text.slice(-4)))
    throw new Error('not base64 text');
  const bytes = Buffer.from(text, 'base64');
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) throw new Error('not gzip data');
  let inflated: Buffer;
  try {
    inflated = gunzipSync(bytes, { maxOutputLength: MESSAGE_MAX_INFLATED_BYTES });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') throw new Error(`inflates beyond ${MESSAGE_MAX_INFLATED_BYTES} bytes`);
    throw new Error(`gzip data is damaged (${code ?? 'unknown error'})`);
  }
  try {
    return JSON.parse(inflated.toString('utf8'));
  } catch {
    throw new Error('inflated text is not JSON');
  }
}

/** What can still be learnt from a message that does not fit its schema: enough to count it against its run. */
function salvage(json: unknown): UnreadableMessageError['salvage'] {
  if (typeof json !== 'object' || json === null) return {};
  const m = json as Record<string, unknown>;
  const found: UnreadableMessageError['salvage'] = {};
  if (typeof m.runId === 'string' && m.runId) found.runId = m.runId;
  if (typeof m.batchId === 'string' && m.batchId) found.batchId = m.batchId;
  if (Array.isArray(m.profiles)) {
    found.profiles = m.profiles.length;
    found.rows = m.profiles.reduce<number>((n, p) => n + (typeof (p as { rows?: unknown })?.rows === 'number' ? (p as { rows: number }).rows : 0), 0);
  }
  return found;
}

function decodeWith<T>(schema: z.ZodType<T>, payload: unknown, what: string): T {
  let json: unknown;
  try {
    json = decodeJson(payload);
  } catch (error) {
    throw new UnreadableMessageError(`${what} is not a readable message: ${(error as Error).message}`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new UnreadableMessageError(formatIssues(what, parsed.error), salvage(json));
  return parsed.data;
}

export function decodeBatchMessage(payload: unknown): BrazeBatchMessage {
  return decodeWith(brazeBatchMessageSchema, payload, 'Braze batch message');
}

export function decodeRunMessage(payload: unknown): RunMessage {
  return decodeWith(runMessageSchema, payload, 'Run message');
}
