import type { Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import { partitionBlob, type PartitionRef } from '../ci/exportRefresh';
import { ExportNotReadyError } from '../errors';
import { statusOf } from '../storage/storageErrors';

/**
 * Opens a partition as the run recorded it: the download is pinned to its ETag, so a file
 * rewritten during the run fails the run instead of mixing two snapshots.
 */
export async function openPartition(container: ContainerClient, partition: PartitionRef): Promise<Readable> {
  try {
    const download = await partitionBlob(container, partition).download(0, undefined, {
      conditions: partition.etag ? { ifMatch: partition.etag } : undefined,
      maxRetryRequests: 5,
    });
    return download.readableStreamBody as Readable;
  } catch (error) {
    const status = statusOf(error);
    if (status === 404) throw new ExportNotReadyError(`partition ${partition.blobName} no longer exists`);
    if (status === 412) throw new ExportNotReadyError(`partition ${partition.blobName} was rewritten after the run started`);
    throw error;
  }
}
