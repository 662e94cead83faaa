import { z } from 'zod';
import { findDestination, type DestinationConfig } from '../config/syncConfig';
import { segmentRefreshSchema, type PartitionRef, type SegmentRefresh } from '../ci/exportRefresh';
import { InvalidInputError } from '../errors';
import { isNotFound } from '../storage/storageErrors';
import { sourcesBlobName, uploadIfAbsent } from './runBlobs';
import type { RunRecord } from './runRecord';
import type { ConnectorDeps } from './connectorDeps';

const sourcesSchema = z.array(segmentRefreshSchema);

/** Every partition of a refresh, numbered in a fixed order; the number is what map steps, batches and rejects refer to. */
export function partitionList(segments: SegmentRefresh[]): { segmentIndex: number; partition: PartitionRef }[] {
  return segments.flatMap((segment, segmentIndex) => segment.partitions.map((partition) => ({ segmentIndex, partition })));
}

/** The bytes of a segment's partitions. */
export function segmentBytes(segment: SegmentRefresh): number {
  return segment.partitions.reduce((n, p) => n + p.sizeBytes, 0);
}

/** The bytes of every partition of a refresh. */
export function refreshBytes(segments: SegmentRefresh[]): number {
  return segments.reduce((n, segment) => n + segmentBytes(segment), 0);
}

/**
 * A refresh's partition list lives in a blob beside the run, not on the run entity: a refresh with
 * many segments and partitions would outgrow a table entity (64 KiB a property, 1 MiB in all).
 * Written once, before the run exists; the same refresh always writes the same list.
 */
export async function writeSources(deps: ConnectorDeps, runId: string, segments: SegmentRefresh[]): Promise<string> {
  const blobName = sourcesBlobName(runId);
  await uploadIfAbsent(deps.storage.stateContainer, blobName, JSON.stringify(segments));
  return blobName;
}

const cache = new WeakMap<ConnectorDeps, Map<string, SegmentRefresh[]>>();

/** The run's segments and partitions; read once per process and run (they never change). */
export async function readSources(deps: ConnectorDeps, run: Pick<RunRecord, 'runId' | 'sourcesBlob'>): Promise<SegmentRefresh[]> {
  let byRun = cache.get(deps);
  if (!byRun) cache.set(deps, (byRun = new Map()));
  const cached = byRun.get(run.runId);
  if (cached) return cached;
  let text: string;
  try {
    text = (await deps.storage.stateContainer.getBlobClient(run.sourcesBlob).downloadToBuffer()).toString('utf8');
  } catch (error) {
    if (isNotFound(error)) throw new InvalidInputError(`run ${run.runId} has lost its partition list (${run.sourcesBlob})`);
    throw error;
  }
  const parsed = sourcesSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new InvalidInputError(`run ${run.runId}: ${run.sourcesBlob} is not a readable partition list`);
  if (byRun.size > 64) byRun.clear();
  byRun.set(run.runId, parsed.data);
  return parsed.data;
}

/** The run's destination in the mapping config; a run whose destination was removed cannot go on. */
export function runDestination(deps: ConnectorDeps, run: Pick<RunRecord, 'destination' | 'instance'>): DestinationConfig {
  const destination = findDestination(deps.config, run.destination, run.instance);
  if (!destination) throw new InvalidInputError(`destination "${run.destination}" is no longer in the mapping config`);
  return destination;
}

/** Partition blob names in the order batches and rejects refer to them by index. */
export async function sourceNames(deps: ConnectorDeps, run: Pick<RunRecord, 'runId' | 'sourcesBlob'>): Promise<string[]> {
  return partitionList(await readSources(deps, run)).map((p) => p.partition.blobName);
}
