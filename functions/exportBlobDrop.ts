import { app, type InvocationContext } from '@azure/functions';
import { requestSyncForBlob } from '../shared/sync/startSync';
import { connector } from './connector';

/**
 * A blob landed in the export container. The trigger's Buffer is ignored: the sync streams the
 * partitions itself, and only needs the blob's name to find its refresh.
 */
export async function exportBlobDrop(_blob: unknown, context: InvocationContext): Promise<void> {
  const blobName = String(context.triggerMetadata?.name ?? '');
  if (!blobName) {
    context.warn('blob event without a blob name; ignored');
    return;
  }
  const outcome = await requestSyncForBlob(connector(), blobName);
  for (const run of outcome.runs) context.log(`blob ${blobName}: run ${run.runId} ${run.created ? 'started' : 'already exists'}`);
  for (const problem of outcome.problems) context.log(`blob ${blobName}: ${problem.error}`);
}

app.storageBlob('exportBlobDrop', {
  path: '%EXPORT_CONTAINER%/{name}',
  connection: 'AzureWebJobsStorage',
  source: 'EventGrid',
  handler: exportBlobDrop,
});
