import { gunzipSync, gzipSync, constants as zlibConstants } from 'node:zlib';
import { z } from 'zod';
import { InvalidInputError } from '../errors';
import { formatIssues } from '../config/settings';

/** Azure Storage queues take at most 64 KiB per message, counted on the encoded text. */
export const QUEUE_MESSAGE_MAX_BYTES = 64 * 1024;

/** A plain object; the Braze object inside is checked by Braze, and a full schema walk per user costs more than the send. */
const attributesObject = z.custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'must be an attributes object');

/** One profile to send: the exact /users/track object plus what we need to account for it. */
export const pendingUserSchema = z.strictObject({
  /** Hash of the profile key (16 hex), matching the delivered-state record. */
  h: z.string().length(16),
  /** The attributes object for Braze, identifier included. */
  o: attributesObject,
  /** Input rows this object stands for (a profile in two segments is one object, two rows); 0 for a leaver. */
  r: z.number().int().min(0),
  /** Where it came from, for the rejects report: `<partitionIndex>:<row>`, or `exit` for a leaver. */
  s: z.string(),
});
export type PendingUser = z.output<typeof pendingUserSchema>;

export const brazeBatchMessageSchema = z.strictObject({
  kind: z.literal('brazeBatch'),
  runId: z.string().min(1),
  /** Deterministic per run: a replayed or duplicated message has the same id. */
  batchId: z.string().min(1),
  /** How often this batch was handed back for later because Braze could not take it in time. */
  deferrals: z.number().int().min(0).default(0),
  /** Re-queued by a resume: the batch has a history (parked, failed) to settle. */
  resumed: z.boolean().optional(),
  users: z.array(pendingUserSchema).min(1),
});
export type BrazeBatchMessage = z.output<typeof brazeBatchMessageSchema>;

export const runMessageSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('startRun'), runId: z.string().min(1) }),
  z.strictObject({ kind: z.literal('finalizeRun'), runId: z.string().min(1) }),
]);
export type RunMessage = z.output<typeof runMessageSchema>;

/**
 * Messages are gzip-compressed JSON in base64: several Braze requests' worth fits in 64 KiB, and
 * base64 is what the Functions queue trigger expects by default.
 */
export function encodeMessage(message: BrazeBatchMessage | RunMessage): string {
  const json = Buffer.from(JSON.stringify(message), 'utf8');
  return gzipSync(json, { level: zlibConstants.Z_BEST_SPEED }).toString('base64');
}

function decodeJson(payload: unknown): unknown {
  if (typeof payload === 'object' && payload !== null && !Buffer.isBuffer(payload)) return payload;
  const text = Buffer.isBuffer(payload) ? payload.toString('utf8') : String(payload);
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) return JSON.parse(trimmed);
  let bytes = Buffer.from(trimmed, 'base64');
  // gzip magic; otherwise the message is base64 JSON (written by hand or by another tool).
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipSync(bytes);
  const inner = bytes.toString('utf8').trim();
  if (inner.startsWith('{')) return JSON.parse(inner);
  // The Functions host may already have decoded the outer base64.
  const again = Buffer.from(inner, 'base64');
  return JSON.parse((again[0] === 0x1f && again[1] === 0x8b ? gunzipSync(again) : again).toString('utf8'));
}

function decodeWith<T>(schema: z.ZodType<T>, payload: unknown, what: string): T {
  let json: unknown;
  try {
    json = decodeJson(payload);
  } catch (error) {
    throw new InvalidInputError(`${what} is not a readable message: ${(error as Error).message}`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new InvalidInputError(formatIssues(what, parsed.error));
  return parsed.data;
}

export function decodeBatchMessage(payload: unknown): BrazeBatchMessage {
  return decodeWith(brazeBatchMessageSchema, payload, 'Braze batch message');
}

export function decodeRunMessage(payload: unknown): RunMessage {
  return decodeWith(runMessageSchema, payload, 'Run message');
}
