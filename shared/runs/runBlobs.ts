import { randomBytes } from 'node:crypto';
import type { ContainerClient } from '@azure/storage-blob';
import { deleteBlobsUnder } from '../storage/blobFolders';
import { isConflict } from '../storage/storageErrors';

/**
 * Where a run keeps its blobs in the state container, under `runs/<runId>/`. Parts that more than
 * one worker could write (a batch taken over after a crash, an enqueue started again) carry the
 * writer's token in their name; the run's records say which writer's parts count.
 */
export function runFolder(runId: string): string {
  return `runs/${runId}`;
}

/** The refresh's segments and partitions, written once when the run is created. */
export function sourcesBlobName(runId: string): string {
  return `${runFolder(runId)}/sources.json`;
}

export function rejectsReportName(runId: string): string {
  return `${runFolder(runId)}/rejects.csv`;
}

/** A reconcile's report: how Braze drifted from Customer Insights, and what was repaired. */
export function driftReportName(runId: string): string {
  return `${runFolder(runId)}/drift.json`;
}

/** A dry run's report: what a real run would change and cost. */
export function previewReportName(runId: string): string {
  return `${runFolder(runId)}/preview.json`;
}

export const REJECTS_PARTS = 'rejects-parts';

export function batchRejectsPartName(runId: string, batchId: string, token: string): string {
  return `${runFolder(runId)}/${REJECTS_PARTS}/batch-${batchId}.${token}.csv`;
}

const pad = (n: number) => String(n).padStart(4, '0');

/** Map step output: the rows of partition `p` that fall into shard `s`, written by the map unit's owner. */
export function mapOutputBlobName(runId: string, partition: number, owner: string, shard: number): string {
  return `${runFolder(runId)}/map/p${pad(partition)}.${owner}/s${pad(shard)}.ndjson`;
}

/** A segment export's users that fall into shard `s`, as Braze holds them, written by the export unit's owner. */
export function viewBlobName(runId: string, segment: number, owner: string, shard: number): string {
  return `${runFolder(runId)}/view/g${pad(segment)}.${owner}/s${pad(shard)}.ndjson`;
}

/** Where Braze said a segment's export will be, written once when it is asked for. */
export function exportRequestBlobName(runId: string, segment: number): string {
  return `${runFolder(runId)}/exports/g${pad(segment)}.json`;
}

export function mapRejectsPartName(runId: string, partition: number, owner: string): string {
  return `${runFolder(runId)}/${REJECTS_PARTS}/map-${pad(partition)}.${owner}.csv`;
}

export function shardRejectsPartName(runId: string, shard: number, owner: string): string {
  return `${runFolder(runId)}/${REJECTS_PARTS}/shard-${pad(shard)}.${owner}.csv`;
}

/** What a shard sent, with each profile's state before the run: to restore for what Braze did not take. */
export function sentBlobName(runId: string, shard: number, owner: string): string {
  return `${runFolder(runId)}/sent/s${pad(shard)}.${owner}.ndjson`;
}

/**
 * What a run did to each profile it touched, by shard (a diff step's) or batch (Braze's refusals),
 * kept with the rejects report until the run expires: what GET /api/users/{id} reads. Key hashes,
 * changes and attribute names — no identifier, no value.
 */
export function touchedShardBlobName(runId: string, shard: number, owner: string): string {
  return `${runFolder(runId)}/${TOUCHED}/s${pad(shard)}.${owner}.ndjson`;
}
export function touchedBatchBlobName(runId: string, batchId: string, token: string): string {
  return `${runFolder(runId)}/${TOUCHED}/b-${batchId}.${token}.ndjson`;
}
/** The batch parts of a shard's batches (their ids start with the shard's prefix). */
export function touchedBatchPrefix(runId: string, shard: number): string {
  return `${runFolder(runId)}/${TOUCHED}/b-s${pad(shard)}-`;
}
const TOUCHED = 'touched';

/** A guarded run's batch messages (one per line), held back until its guard is passed or a person approves it. */
export function stagedBatchesName(runId: string, shard: number, owner: string): string {
  return `${runFolder(runId)}/staged/s${pad(shard)}.${owner}.txt`;
}

export function mapPartName(partition: number): string {
  return `map-${pad(partition)}`;
}

export function shardPartName(shard: number): string {
  return `shard-${pad(shard)}`;
}

export function undeliveredPrefix(runId: string): string {
  return `${runFolder(runId)}/undelivered/`;
}

export function undeliveredBlobName(runId: string, batchId: string, token: string): string {
  return `${undeliveredPrefix(runId)}${batchId}.${token}.txt`;
}

/** The child message a batch hands its unsent profiles to, written by the batch's owner before the hand-off. */
export function handoffBlobName(runId: string, batchId: string, owner: string): string {
  return `${runFolder(runId)}/handoffs/${batchId}.${owner}.msg`;
}

export function parkedPrefix(runId: string): string {
  return `${runFolder(runId)}/parked/`;
}

export function parkedBlobName(runId: string, batchId: string): string {
  return `${parkedPrefix(runId)}${batchId}.msg`;
}

export function unreadableBlobName(runId: string, name: string): string {
  return `${runFolder(runId)}/unreadable/${name}.txt`;
}

/** `<batchId>.<token>.<ext>` → its parts; undefined for names of another shape. */
export function splitPartName(fileName: string): { id: string; token: string } | undefined {
  const match = /^(.+)\.([0-9a-f]{12})\.[a-z]+$/.exec(fileName);
  return match ? { id: match[1], token: match[2] } : undefined;
}

/**
 * Deletes what a run no longer needs once nothing of it can be resumed: the working blobs that hold
 * profile identifiers (map outputs, what each shard sent, undelivered lists, hand-offs, parked
 * and unreadable batches, rejects parts) and the partition list. The rejects report stays (it names rows, not
 * people); the storage lifecycle rule in the README removes it after the retention the user sets.
 */
export async function deleteWorkingBlobs(container: ContainerClient, runId: string, completed = false): Promise<number> {
  const kept = new Set([rejectsReportName(runId), previewReportName(runId), driftReportName(runId)]);
  // What a completed run did to each profile stays for GET /api/users/{id}; a run that ended otherwise did not do it.
  return deleteBlobsUnder(container, `${runFolder(runId)}/`, kept, completed ? `${runFolder(runId)}/${TOUCHED}/` : undefined);
}

/** Every blob of a run, the rejects report included: the run has outlived its retention. */
export async function deleteRunFolder(container: ContainerClient, runId: string): Promise<number> {
  return deleteBlobsUnder(container, `${runFolder(runId)}/`);
}

/** Uploads a small blob unless it exists: the first writer wins, later ones change nothing. */
export async function uploadIfAbsent(container: ContainerClient, blobName: string, text: string): Promise<void> {
  try {
    await container.getBlockBlobClient(blobName).upload(text, Buffer.byteLength(text), { conditions: { ifNoneMatch: '*' } });
  } catch (error) {
    if (!isConflict(error)) throw error;
  }
}

/** A writer's token: 12 hex characters, unique enough to tell one worker's parts from another's. */
export function newToken(): string {
  return randomBytes(6).toString('hex');
}
