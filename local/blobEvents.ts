import { randomUUID } from 'node:crypto';
import type { EventGridEvent } from '@azure/functions';
import type { ContainerClient } from '@azure/storage-blob';

/**
 * The Microsoft.Storage.BlobCreated event Event Grid delivers for a blob written to the container,
 * in the Event Grid schema, as the Functions host hands it to an Event Grid trigger.
 */
export async function blobCreatedEvent(container: ContainerClient, blobName: string): Promise<EventGridEvent> {
  const properties = await container.getBlobClient(blobName).getProperties();
  const account = new URL(container.url).pathname.split('/').filter(Boolean).at(-2) ?? 'devstoreaccount1';
  return {
    id: randomUUID(),
    topic: `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/${account}`,
    subject: `/blobServices/default/containers/${container.containerName}/blobs/${blobName}`,
    eventType: 'Microsoft.Storage.BlobCreated',
    eventTime: (properties.lastModified ?? new Date()).toISOString(),
    dataVersion: '',
    metadataVersion: '1',
    data: {
      api: 'PutBlob',
      clientRequestId: randomUUID(),
      requestId: randomUUID(),
      eTag: properties.etag,
      contentType: properties.contentType ?? 'application/octet-stream',
      contentLength: properties.contentLength ?? 0,
      blobType: 'BlockBlob',
      url: `${container.url}/${blobName.split('/').map(encodeURIComponent).join('/')}`,
      sequencer: '0000000000000000000000000000000000000000000000000',
      storageDiagnostics: { batchId: randomUUID() },
    },
  };
}
