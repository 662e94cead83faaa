import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import { z } from 'zod';
import { candidateBlobName, splitPartName, undeliveredBlobName, undeliveredPrefix } from '../runs/runBlobs';
import { BlobLineWriter } from '../storage/blobLineWriter';
import { isNotFound } from '../storage/storageErrors';

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
 * Writes a destination's new delivered state from a run's candidate: the new state for profiles
 * Braze accepted, the old one for those it did not, so they are sent again next refresh. The blob
 * is new (named by run); the caller switches the state pointer to it once it is complete.
 */
export async function writeStateFromCandidate(
  container: ContainerClient,
  run: { runId: string; modelJsonPath: string; enqueuedBy: string },
  batchTokens: Map<string, string>,
  signal?: AbortSignal,
): Promise<{ blobName: string; profiles: number }> {
  const undelivered = await loadUndelivered(container, run.runId, batchTokens);
  const blobName = stateBlobName(run.modelJsonPath, run.runId);
  const writer = new NdjsonWriter(container, blobName);
  try {
    for await (const record of readNdjson(container, candidateBlobName(run.runId, run.enqueuedBy), candidateRecordSchema, isCandidateRecord, true)) {
      signal?.throwIfAborted();
      const chosen = record.b !== undefined && undelivered.has(record.h) ? record.p : record.n;
      if (chosen && chosen.m.length > 0) await writer.writeState({ h: record.h, k: record.k, m: chosen.m, f: chosen.f });
    }
  } catch (error) {
    await writer.abort(error);
    throw error;
  }
  await writer.close();
  return { blobName, profiles: writer.lines };
}
