import type { Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import type { DestinationConfig } from '../config/syncConfig';
import type { PartitionRef, SegmentRefresh } from '../ci/exportRefresh';
import { readPartition, type PartitionColumns } from '../ci/partitionReader';
import { createKeyMapper, createRowMapper, type RowMapping } from '../mapping/rowMapper';
import { ExportNotReadyError } from '../errors';

export interface SourcedRow<T> {
  segmentIndex: number;
  partitionIndex: number;
  row: number;
  /** What the row mapped to, or why it cannot be read. */
  result: { ok: true; value: T } | { ok: false; reason: string };
}

/** Every partition of a refresh, numbered in a fixed order; the number is what batches and rejects refer to. */
export function partitionList(segments: SegmentRefresh[]): { segmentIndex: number; partition: PartitionRef }[] {
  return segments.flatMap((segment, segmentIndex) => segment.partitions.map((partition) => ({ segmentIndex, partition })));
}

/**
 * Streams every row of the given segments (in that order), through a mapper built per partition.
 * The download is pinned to the ETag the run recorded: a file rewritten mid-run fails the run
 * instead of mixing two snapshots.
 */
async function* readRows<T>(
  container: ContainerClient,
  segments: SegmentRefresh[],
  segmentOrder: number[],
  mapperFor: (segment: SegmentRefresh, columns: PartitionColumns) => (values: string[]) => SourcedRow<T>['result'],
): AsyncGenerator<SourcedRow<T>> {
  const partitions = partitionList(segments);
  for (const segmentIndex of segmentOrder) {
    const segment = segments[segmentIndex];
    for (let partitionIndex = 0; partitionIndex < partitions.length; partitionIndex++) {
      if (partitions[partitionIndex].segmentIndex !== segmentIndex) continue;
      const partition = partitions[partitionIndex].partition;
      let body: Readable;
      try {
        const download = await container.getBlobClient(partition.blobName).download(0, undefined, {
          conditions: partition.etag ? { ifMatch: partition.etag } : undefined,
          maxRetryRequests: 5,
        });
        body = download.readableStreamBody as Readable;
      } catch (error) {
        const status = (error as { statusCode?: number }).statusCode;
        if (status === 404) throw new ExportNotReadyError(`partition ${partition.blobName} no longer exists`);
        if (status === 412) throw new ExportNotReadyError(`partition ${partition.blobName} was rewritten after the run started`);
        throw error;
      }
      let map: ((values: string[]) => SourcedRow<T>['result']) | undefined;
      for await (const record of readPartition(
        body,
        partition.format,
        segment.attributes,
        (columns) => (map = mapperFor(segment, columns)),
        partition.blobName,
      )) {
        const result: SourcedRow<T>['result'] = record.kind === 'invalid' ? { ok: false, reason: record.reason } : map!(record.values);
        yield { segmentIndex, partitionIndex, row: record.row, result };
      }
    }
  }
}

/** Rows mapped to Braze profiles. */
export function readExportRows(
  container: ContainerClient,
  segments: SegmentRefresh[],
  destination: DestinationConfig,
  segmentOrder: number[],
): AsyncGenerator<SourcedRow<RowMapping & { ok: true }>> {
  return readRows(container, segments, segmentOrder, (segment, columns) => {
    const map = createRowMapper(destination, segment.attributes, columns);
    return (values) => {
      const mapping = map(values);
      return mapping.ok ? { ok: true, value: mapping } : mapping;
    };
  });
}

/** Rows reduced to their profile key: the cheap pass that learns who is in which segment. */
export function readExportKeys(
  container: ContainerClient,
  segments: SegmentRefresh[],
  destination: DestinationConfig,
  segmentOrder: number[],
): AsyncGenerator<SourcedRow<string>> {
  return readRows(container, segments, segmentOrder, (_segment, columns) => {
    const keyOf = createKeyMapper(destination, columns);
    return (values) => {
      const key = keyOf(values);
      return key === undefined ? { ok: false, reason: 'no usable identifier' } : { ok: true, value: key };
    };
  });
}
