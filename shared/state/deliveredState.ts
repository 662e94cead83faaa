import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import { z } from 'zod';
import { sentBlobName, splitPartName, undeliveredBlobName, undeliveredPrefix } from '../runs/runBlobs';
import { BlobLineWriter } from '../storage/blobLineWriter';
import { deleteBlobsUnder } from '../storage/blobFolders';
import { isNotFound } from '../storage/storageErrors';
import { keyHash } from './profileIndex';

/**
 * The delivered state of an export destination: per profile, what Braze last accepted — its
 * memberships and a fingerprint of the raw values its fields were mapped from — and its key, so
 * a leaver can be cleared. Format 2 splits it into shards by key hash (one blob each, listed by a
 * manifest), so each shard of a run reads and writes only its own slice. Format 1 (one blob,
 * fingerprints of mapped fields) is still read for memberships and keys, but its fingerprints are
 * not comparable: a run on it sends everything in full.
 */
export const STATE_FORMAT = 2;

/** What Braze last accepted for a profile: its memberships (attribute names) and a fingerprint of its fields. */
export const profileStateSchema = z.object({
  m: z.array(z.string()),
  f: z.string(),
  /** Short hashes of the mapped fields one by one (for a preview's per-attribute counts); absent in older states. */
  a: z
    .string()
    .regex(/^[0-9a-f-]*$/)
    .optional(),
  /**
   * The subscription states Braze last accepted from the connector, by item (`email_subscribe`,
   * `push_subscribe`, `g:<group id>`): a state is sent again only when CI's value for it changes.
   */
  c: z.record(z.string(), z.string()).optional(),
});
export type ProfileState = z.output<typeof profileStateSchema>;

/** A record's state alone (what a sent line keeps to restore). */
export function profileStateOf(record: ProfileState): ProfileState {
  return record.c === undefined ? { m: record.m, f: record.f, a: record.a } : { m: record.m, f: record.f, a: record.a, c: record.c };
}

/** One line of the delivered state: hash, profile key (the identifier, to clear leavers), state. */
export const stateRecordSchema = profileStateSchema.extend({ h: z.string().length(16), k: z.string().min(3) });
export type StateRecord = z.output<typeof stateRecordSchema>;

/** One line of what a shard sent: the profile's state before this run, to restore if Braze did not take it. */
export const sentRecordSchema = z.object({ h: z.string().length(16), k: z.string().min(3), p: profileStateSchema.nullable() });
export type SentRecord = z.output<typeof sentRecordSchema>;

export const stateManifestSchema = z.strictObject({
  format: z.literal(STATE_FORMAT),
  runId: z.string(),
  shards: z.number().int().min(1),
  profiles: z.number().int().min(0),
  /** One blob per shard, by shard index. */
  blobs: z.array(z.string().min(1)),
  /**
   * GUID customer IDs are keyed in their canonical spelling. A record may still hold an older
   * spelling (a rename Braze did not take), under its canonical key's hash.
   */
  guidKeys: z.literal(true).optional(),
  /** How many of its profiles are keyed by e-mail (absent in older manifests: not known). */
  emailKeys: z.number().int().min(0).optional(),
  /** The form Braze holds its memberships in: `list:<attribute>`; absent, one attribute per segment. */
  membership: z.string().min(1).optional(),
});
export type StateManifest = z.output<typeof stateManifestSchema>;

/** The previous state a run diffs against. */
export type PreviousState = { format: 0 } | { format: 1; blobName: string; profiles: number } | { format: 2; manifest: StateManifest };

export function destinationKey(modelJsonPath: string): string {
  return createHash('sha256').update(modelJsonPath).digest('hex').slice(0, 32);
}

/** Everything a run writes of a destination's state lives under this folder. */
export function stateFolder(modelJsonPath: string, runId: string): string {
  return `state/${destinationKey(modelJsonPath)}/${runId}/`;
}

/**
 * Deletes what a run wrote of a destination's state (its shards' states and its manifest): the run
 * ended without its state becoming the destination's, or a newer state replaced it. Those blobs
 * hold profile keys and e-mails, so none is left behind.
 */
export async function deleteStateFolder(container: ContainerClient, modelJsonPath: string, runId: string): Promise<number> {
  return deleteBlobsUnder(container, stateFolder(modelJsonPath, runId));
}

export function manifestBlobName(modelJsonPath: string, runId: string): string {
  return `${stateFolder(modelJsonPath, runId)}manifest.json`;
}

export function shardStateBlobName(modelJsonPath: string, runId: string, shard: number, token: string): string {
  return `${stateFolder(modelJsonPath, runId)}s${String(shard).padStart(4, '0')}.${token}.ndjson`;
}

export const MAX_SHARDS = 1024;

/** The shard of a profile: the low bits of its key hash (shard counts are powers of two, so shards split and merge cleanly). */
export function shardOfHash(hash: string, shards: number): number {
  return (parseInt(hash.slice(8, 16), 16) & (shards - 1)) >>> 0;
}

function powerOfTwoAtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * How many shards a run splits its profiles into: enough for ~100k profiles each, at most four
 * times more or fewer than the previous state had (so a shard reads one or a few of the previous
 * shards). A format-1 state is one blob that every shard reads, filtered, once.
 */
export function shardCountFor(profilesEstimate: number, previous: PreviousState, profilesPerShard: number): number {
  const wanted = Math.min(MAX_SHARDS, powerOfTwoAtLeast(Math.max(1, Math.ceil(profilesEstimate / profilesPerShard))));
  if (previous.format !== 2) return wanted;
  const before = previous.manifest.shards;
  return Math.min(before * 4, Math.max(Math.max(1, before / 4), wanted));
}

const isProfileState = (v: unknown): v is ProfileState =>
  typeof v === 'object' &&
  v !== null &&
  Array.isArray((v as ProfileState).m) &&
  (v as ProfileState).m.every((m) => typeof m === 'string') &&
  typeof (v as ProfileState).f === 'string' &&
  ((v as ProfileState).a === undefined || (typeof (v as ProfileState).a === 'string' && /^[0-9a-f-]*$/.test((v as ProfileState).a!))) &&
  ((v as ProfileState).c === undefined || isStringRecord((v as ProfileState).c));

const isStringRecord = (v: unknown): boolean =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((state) => typeof state === 'string');

/** The hot-path shape checks; a line that fails one goes through the zod schema for a precise message. */
export const isStateRecord = (v: unknown): v is StateRecord =>
  isProfileState(v) && typeof (v as StateRecord).h === 'string' && (v as StateRecord).h.length === 16 && typeof (v as StateRecord).k === 'string';

export const isSentRecord = (v: unknown): v is SentRecord => {
  const r = v as SentRecord;
  return (
    typeof v === 'object' && v !== null && typeof r.h === 'string' && r.h.length === 16 && typeof r.k === 'string' && (r.p === null || isProfileState(r.p))
  );
};

/** Streams NDJSON lines of a blob; yields nothing when the blob does not exist, unless it must. */
export async function* readNdjson<T>(
  container: ContainerClient,
  blobName: string,
  schema: z.ZodType<T>,
  isValid: (value: unknown) => value is T,
  mustExist = false,
): AsyncGenerator<T> {
  let body: Readable;
  try {
    const download = await container.getBlobClient(blobName).download();
    body = download.readableStreamBody as Readable;
  } catch (error) {
    if (isNotFound(error) && !mustExist) return;
    throw error;
  }
  const lines = createInterface({ input: body, crlfDelay: Infinity });
  let lineNumber = 0;
  for await (const line of lines) {
    lineNumber += 1;
    if (!line) continue;
    const value: unknown = JSON.parse(line);
    if (isValid(value)) {
      yield value;
      continue;
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new Error(`${blobName} line ${lineNumber} is not a valid record: ${parsed.error.issues[0]?.message}`);
    yield parsed.data;
  }
}

/** The state a destination's pointer names: none, a format-1 blob, or a format-2 manifest. */
export async function readPreviousState(
  container: ContainerClient,
  pointer: { blobName: string; profiles: number; format?: number } | undefined,
): Promise<PreviousState> {
  if (!pointer) return { format: 0 };
  if (pointer.format !== STATE_FORMAT) return { format: 1, blobName: pointer.blobName, profiles: pointer.profiles };
  const text = (await container.getBlobClient(pointer.blobName).downloadToBuffer()).toString('utf8');
  return { format: 2, manifest: stateManifestSchema.parse(JSON.parse(text)) };
}

/** The blobs of the previous state that hold the records of `shard` of `shards`. */
export function previousShardBlobs(previous: PreviousState, shard: number, shards: number): string[] {
  if (previous.format === 1) return [previous.blobName];
  if (previous.format !== 2) return [];
  const before = previous.manifest.shards;
  return shards >= before ? [previous.manifest.blobs[shard & (before - 1)]] : previous.manifest.blobs.filter((_, j) => (j & (shards - 1)) === shard);
}

/** The previous state's records that fall into `shard` of `shards`: read from the one or few previous shards that hold them. */
export async function* readPreviousShard(container: ContainerClient, previous: PreviousState, shard: number, shards: number): AsyncGenerator<StateRecord> {
  for (const blobName of previousShardBlobs(previous, shard, shards)) {
    for await (const record of readNdjson(container, blobName, stateRecordSchema, isStateRecord, true)) {
      if (shards === 1 || shardOfHash(record.h, shards) === shard) yield record;
    }
  }
}

/**
 * A shard's slice of a state written before GUID customer IDs were keyed in one spelling: every
 * blob is read, and a record whose key is a GUID spelled otherwise is placed by its canonical key's
 * hash, keeping its key as it is (the external_id Braze has), so the diff renames it in Braze.
 */
export async function* readPreviousShardRekeyed(
  container: ContainerClient,
  previous: PreviousState,
  shard: number,
  shards: number,
  rekey: (key: string) => string | undefined,
): AsyncGenerator<StateRecord> {
  const blobs = previous.format === 1 ? [previous.blobName] : previous.format === 2 ? previous.manifest.blobs : [];
  for (const blobName of blobs) {
    for await (const record of readNdjson(container, blobName, stateRecordSchema, isStateRecord, true)) {
      const key = rekey(record.k);
      const h = key === undefined ? record.h : keyHash(key);
      if (shards === 1 || shardOfHash(h, shards) === shard) yield key === undefined ? record : { ...record, h };
    }
  }
}

/**
 * The fingerprint of a profile whose state in Braze is not known: a superseded run sent it, and
 * may or may not have delivered it. It never equals a row's fingerprint, and the diff sends such a
 * profile in full — every current membership, every field — and clears every membership its record
 * holds (what Braze had before, and what the superseded run may have set).
 */
export const UNCERTAIN_FINGERPRINT = 'uncertain';

/** What a superseded run that may have delivered part of its snapshot left: its shards' states and what each sent. */
export interface UncertainRun {
  runId: string;
  shards: number;
  /** By shard: the shard step's owner (names its sent blob) and the state blob it wrote. */
  shardOutputs: { index: number; owner: string; stateBlob?: string }[];
}

/**
 * The profiles of `shard` (of `shards`) that an uncertain run sent, as records to diff against:
 * its key, the memberships Braze may hold — what the run found before, joined with what it set —
 * and the uncertain fingerprint. `complete` is false when what that run left is gone (removed by
 * hand, or by a lifecycle rule after a long wait): which profiles it touched is then not known.
 */
export async function readUncertainShard(
  container: ContainerClient,
  uncertain: UncertainRun,
  shard: number,
  shards: number,
): Promise<{ records: StateRecord[]; complete: boolean }> {
  const before = uncertain.shards;
  const relevant = uncertain.shardOutputs.filter((o) => (shards >= before ? o.index === (shard & (before - 1)) : (o.index & (shards - 1)) === shard));
  const records: StateRecord[] = [];
  for (const output of relevant) {
    const sent = new Map<string, SentRecord>();
    const sentBlob = sentBlobName(uncertain.runId, output.index, output.owner);
    if (!(await container.getBlobClient(sentBlob).exists()) || (output.stateBlob && !(await container.getBlobClient(output.stateBlob).exists())))
      return { records: [], complete: false };
    for await (const record of readNdjson(container, sentBlob, sentRecordSchema, isSentRecord, true))
      if (shards === 1 || shardOfHash(record.h, shards) === shard) sent.set(record.h, record);
    if (sent.size === 0) continue;
    const next = new Map<string, string[]>();
    if (output.stateBlob)
      for await (const record of readNdjson(container, output.stateBlob, stateRecordSchema, isStateRecord, true))
        if (sent.has(record.h)) next.set(record.h, record.m);
    for (const [hash, record] of sent) {
      const memberships = new Set([...(record.p?.m ?? []), ...(next.get(hash) ?? [])]);
      records.push({ h: hash, k: record.k, m: [...memberships].sort(), f: UNCERTAIN_FINGERPRINT });
    }
  }
  return { records, complete: relevant.length === (shards >= before ? 1 : before / shards) };
}

/**
 * State and sent lines, serialized by hand: the same JSON that JSON.stringify would write,
 * without its generic walk, since a million of them are written per run.
 */
const membershipJson = new Map<string, string>();
function stateJson(state: ProfileState | null | undefined): string {
  if (!state) return 'null';
  // The count keeps [] and [""] apart; a name holding the separator is never cached, so no two
  // lists a key is cached for share it.
  const key = `${state.m.length}\u0000${state.m.join('\u0000')}`;
  let m = membershipJson.get(key);
  if (m === undefined) {
    m = JSON.stringify(state.m);
    if (membershipJson.size < 4096 && !state.m.some((name) => name.includes('\u0000'))) membershipJson.set(key, m);
  }
  const base = state.a === undefined ? `{"m":${m},"f":"${state.f}"` : `{"m":${m},"f":"${state.f}","a":"${state.a}"`;
  return state.c === undefined ? `${base}}` : `${base},"c":${JSON.stringify(state.c)}}`;
}

export function stateLine(record: StateRecord): string {
  return `{"h":"${record.h}","k":${JSON.stringify(record.k)},${stateJson(record).slice(1)}`;
}

export function sentLine(record: SentRecord): string {
  return `{"h":"${record.h}","k":${JSON.stringify(record.k)},"p":${stateJson(record.p)}}`;
}

/** NDJSON on top of the line writer. */
export class NdjsonWriter extends BlobLineWriter {
  constructor(container: ContainerClient, blobName: string) {
    super(container, blobName, 'application/x-ndjson');
  }

  writeState(record: StateRecord): Promise<void> {
    return this.writeLine(stateLine(record));
  }

  writeSent(record: SentRecord): Promise<void> {
    return this.writeLine(sentLine(record));
  }
}

/**
 * Hashes of profiles of a batch that did not reach Braze (failed, parked or rejected by Braze),
 * named by batch and writer: only the part of the writer that closed the batch counts.
 */
export async function writeUndelivered(container: ContainerClient, runId: string, batchId: string, token: string, hashes: string[]): Promise<void> {
  if (hashes.length === 0) return;
  const text = hashes.join('\n');
  await container.getBlockBlobClient(undeliveredBlobName(runId, batchId, token)).upload(text, Buffer.byteLength(text));
}

/** The undelivered profiles of a run, from the parts of the writers that closed their batches. */
export async function loadUndelivered(container: ContainerClient, runId: string, batchTokens: Map<string, string>): Promise<Set<string>> {
  const hashes = new Set<string>();
  for await (const item of container.listBlobsFlat({ prefix: undeliveredPrefix(runId) })) {
    const part = splitPartName(item.name.slice(undeliveredPrefix(runId).length));
    if (!part || batchTokens.get(part.id) !== part.token) continue;
    const text = (await container.getBlobClient(item.name).downloadToBuffer()).toString('utf8');
    for (const hash of text.split('\n')) if (hash) hashes.add(hash);
  }
  return hashes;
}

/**
 * A shard's state as the run wrote it assumes Braze took every profile it sent; this restores
 * the previous state of the ones it did not (they are sent again next refresh) into a new blob.
 * Profiles sent and not delivered are few, so the shard's sent record is read into a map.
 */
export async function restoreUndelivered(
  container: ContainerClient,
  shard: { stateBlob: string; sentBlob: string },
  undelivered: Set<string>,
  target: string,
  signal?: AbortSignal,
): Promise<{ profiles: number; emailKeys: number }> {
  const restore = new Map<string, SentRecord>();
  let emailKeys = 0;
  for await (const record of readNdjson(container, shard.sentBlob, sentRecordSchema, isSentRecord, true)) {
    if (undelivered.has(record.h)) restore.set(record.h, record);
  }
  const writer = new NdjsonWriter(container, target);
  try {
    for await (const record of readNdjson(container, shard.stateBlob, stateRecordSchema, isStateRecord, true)) {
      signal?.throwIfAborted();
      if (restore.has(record.h)) continue;
      if (record.k.startsWith('e:')) emailKeys += 1;
      await writer.writeState(record);
    }
    for (const record of restore.values()) {
      if (!record.p || record.p.m.length === 0) continue;
      if (record.k.startsWith('e:')) emailKeys += 1;
      await writer.writeState({ h: record.h, k: record.k, ...profileStateOf(record.p) });
    }
  } catch (error) {
    await writer.abort(error);
    throw error;
  }
  await writer.close();
  return { profiles: writer.lines, emailKeys };
}

/**
 * Whether a run's map steps leave identity hints (see mapLines): when the state it diffs against
 * may hold profiles keyed by e-mail (whose rows may have got a customer ID), and on a first run,
 * where rows keyed by e-mail may carry the address of a row with a customer ID. A destination
 * whose profiles all have customer IDs pays nothing for them after its first run.
 */
export function wantsIdentityHints(previous: PreviousState): boolean {
  if (previous.format !== 2) return true;
  return previous.manifest.emailKeys === undefined || previous.manifest.emailKeys > 0;
}
