import type { Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import type { DestinationConfig } from '../config/syncConfig';
import type { PartitionRef, SegmentRefresh } from '../ci/exportRefresh';
import { readPartition, type PartitionColumns } from '../ci/partitionReader';
import { createRowMapper, type RowMapper, type RowMapping } from '../mapping/rowMapper';
import { ExportNotReadyError } from '../errors';

export interface ExportRow {
  segmentIndex: number;
  partitionIndex: number;
  row: number;
  /** The mapped profile, or why the row cannot be sent. */
  mapping: RowMapping;
}

/** Every partition of a refresh, numbered in a fixed order; the number is what batches and rejects refer to. */
export function partitionList(segments: SegmentRefresh[]): { segmentIndex: number; partition: PartitionRef }[] {
  return segments.flatMap((segment, segmentIndex) => segment.partitions.map((partition) => ({ segmentIndex, partition })));
}

/**
 * Streams every row of every partition of the refresh, mapped. The download is pinned to the
 * ETag the run recorded: a file rewritten mid-run fails the run instead of mixing two snapshots.
 */
export async function* readExportRows(container: ContainerClient, segments: SegmentRefresh[], destination: DestinationConfig): AsyncGenerator<ExportRow> {
  const partitions = partitionList(segments);
  for (let partitionIndex = 0; partitionIndex < partitions.length; partitionIndex++) {
    const { segmentIndex, partition } = partitions[partitionIndex];
    const segment = segments[segmentIndex];
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
    let mapper: RowMapper | undefined;
    const onColumns = (columns: PartitionColumns) => {
      mapper = createRowMapper(destination, segment.attributes, columns);
    };
    for await (const record of readPartition(body, partition.format, segment.attributes, onColumns)) {
      if (record.kind === 'invalid') {
        yield { segmentIndex, partitionIndex, row: record.row, mapping: { ok: false, reason: record.reason } };
        continue;
      }
      yield { segmentIndex, partitionIndex, row: record.row, mapping: mapper!(record.values) };
    }
  }
}
