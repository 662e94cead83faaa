import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import { z } from 'zod';
import { runFolder } from '../runs/rejectsReport';
import { BlobLineWriter } from '../storage/blobLineWriter';

/** What Braze last accepted for a profile: its memberships (attribute names) and a fingerprint of its fields. */
export const profileStateSchema = z.object({ m: z.array(z.string()), f: z.string() });
export type ProfileState = z.output<typeof profileStateSchema>;

/** One line of the delivered state: hash, profile key (the identifier, to clear leavers), state. */
export const stateRecordSchema = profileStateSchema.extend({ h: z.string().length(16), k: z.string().min(3) });
export type StateRecord = z.output<typeof stateRecordSchema>;

/**
 * One line of a run's candidate state: what the state becomes if the profile's batch is
 * delivered (`n`), and what it stays if not (`p`). `b` is the batch that carries the profile,
 * absent when nothing was sent for it.
 */
export const candidateRecordSchema = z.object({
  h: z.string().length(16),
  k: z.string().min(3),
  n: profileStateSchema.nullable(),
  p: profileStateSchema.nullable(),
  b: z.string().optional(),
});
export type CandidateRecord = z.output<typeof candidateRecordSchema>;

export function destinationKey(modelJsonPath: string): string {
  return createHash('sha256').update(modelJsonPath).digest('hex').slice(0, 32);
}

export function stateBlobName(modelJsonPath: string, runId: string): string {
  return `state/${destinationKey(modelJsonPath)}/delivered-${runId}.ndjson`;
}

export function candidateBlobName(runId: string): string {
  return `${runFolder(runId)}/candidate-state.ndjson`;
}

export function undeliveredPrefix(runId: string): string {
  return `${runFolder(runId)}/undelivered/`;
}

const isProfileState = (v: unknown): v is ProfileState =>
  typeof v === 'object' &&
  v !== null &&
  Array.isArray((v as ProfileState).m) &&
  (v as ProfileState).m.every((m) => typeof m === 'string') &&
  typeof (v as ProfileState).f === 'string';

/** The hot-path shape checks; a line that fails one goes through the zod schema for a precise message. */
export const isStateRecord = (v: unknown): v is StateRecord =>
  isProfileState(v) && typeof (v as StateRecord).h === 'string' && (v as StateRecord).h.length === 16 && typeof (v as StateRecord).k === 'string';

export const isCandidateRecord = (v: unknown): v is CandidateRecord => {
  const r = v as CandidateRecord;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof r.h === 'string' &&
    r.h.length === 16 &&
    typeof r.k === 'string' &&
    (r.n === null || isProfileState(r.n)) &&
    (r.p === null || isProfileState(r.p)) &&
    (r.b === undefined || typeof r.b === 'string')
  );
};

/** Streams NDJSON lines of a blob; yields nothing when the blob does not exist. */
export async function* readNdjson<T>(
  container: ContainerClient,
  blobName: string,
  schema: z.ZodType<T>,
  isValid: (value: unknown) => value is T,
): AsyncGenerator<T> {
  let body: Readable;
  try {
    const download = await container.getBlobClient(blobName).download();
    body = download.readableStreamBody as Readable;
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return;
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

/**
 * State and candidate lines, serialized by hand: the same JSON that JSON.stringify would write,
 * without its generic walk, since a million of them are written per run.
 */
const membershipJson = new Map<string, string>();
function stateJson(state: ProfileState | null | undefined): string {
  if (!state) return 'null';
  const key = state.m.join('\u0000');
  let m = membershipJson.get(key);
  if (m === undefined) {
    m = JSON.stringify(state.m);
    if (membershipJson.size < 4096) membershipJson.set(key, m);
  }
  return `{"m":${m},"f":"${state.f}"}`;
}

export function stateLine(record: StateRecord): string {
  return `{"h":"${record.h}","k":${JSON.stringify(record.k)},${stateJson(record).slice(1)}`;
}

export function candidateLine(record: CandidateRecord): string {
  const batch = record.b === undefined ? '' : `,"b":"${record.b}"`;
  return `{"h":"${record.h}","k":${JSON.stringify(record.k)},"n":${stateJson(record.n)},"p":${stateJson(record.p)}${batch}}`;
}

/** NDJSON on top of the line writer. */
export class NdjsonWriter extends BlobLineWriter {
  constructor(container: ContainerClient, blobName: string) {
    super(container, blobName, 'application/x-ndjson');
  }

  writeState(record: StateRecord): Promise<void> {
    return this.writeLine(stateLine(record));
  }

  writeCandidate(record: CandidateRecord): Promise<void> {
    return this.writeLine(candidateLine(record));
  }
}

/**
 * Hashes of profiles whose batch did not reach Braze (failed, parked or rejected by Braze), one
 * blob per batch so a replay overwrites instead of adding.
 */
export async function writeUndelivered(container: ContainerClient, runId: string, batchId: string, hashes: string[]): Promise<void> {
  const blob = container.getBlockBlobClient(`${undeliveredPrefix(runId)}${batchId}.txt`);
  if (hashes.length === 0) {
    await blob.deleteIfExists();
    return;
  }
  const text = hashes.join('\n');
  await blob.upload(text, Buffer.byteLength(text));
}

export async function loadUndelivered(container: ContainerClient, runId: string): Promise<Set<string>> {
  const hashes = new Set<string>();
  for await (const item of container.listBlobsFlat({ prefix: undeliveredPrefix(runId) })) {
    const text = (await container.getBlobClient(item.name).downloadToBuffer()).toString('utf8');
    for (const hash of text.split('\n')) if (hash) hashes.add(hash);
  }
  return hashes;
}

/**
 * Writes a destination's new delivered state from a run's candidate: the new state for profiles
 * Braze accepted, the old one for those it did not, so they are sent again next refresh. The blob
 * is new (named by run); the caller switches the state pointer to it once it is complete.
 */
export async function writeStateFromCandidate(
  container: ContainerClient,
  runId: string,
  modelJsonPath: string,
): Promise<{ blobName: string; profiles: number }> {
  const undelivered = await loadUndelivered(container, runId);
  const blobName = stateBlobName(modelJsonPath, runId);
  const writer = new NdjsonWriter(container, blobName);
  for await (const record of readNdjson(container, candidateBlobName(runId), candidateRecordSchema, isCandidateRecord)) {
    const chosen = record.b !== undefined && undelivered.has(record.h) ? record.p : record.n;
    if (chosen && chosen.m.length > 0) await writer.writeState({ h: record.h, k: record.k, m: chosen.m, f: chosen.f });
  }
  await writer.close();
  return { blobName, profiles: writer.lines };
}
