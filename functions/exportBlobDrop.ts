import { app, type EventGridEvent, type InvocationContext } from '@azure/functions';
import { blobOfEvent } from '../shared/ci/blobEvents';
import { requestSyncForBlob } from '../shared/sync/startSync';
import { connector } from './connector';

/** The name the Event Grid subscription delivers to (infra/modules/eventSubscription.bicep). */
export const EXPORT_BLOB_DROP_FUNCTION = 'exportBlobDrop';

/**
 * A blob landed in the export storage account (Event Grid, Microsoft.Storage.BlobCreated). Only the
 * event is read, never the blob: partitions are often 100 MB and the sync streams what it needs.
 */
export async function exportBlobDrop(event: EventGridEvent, context: InvocationContext): Promise<void> {
  const deps = connector();
  const target = blobOfEvent(event, deps.storage.exportContainer);
  if (target.kind === 'ignored') {
    context.log(`event ${event.id ?? ''} ignored: ${target.reason}`);
    return;
  }
  const outcome = await requestSyncForBlob(deps, target.blobName);
  for (const run of outcome.runs) context.log(`blob ${target.blobName}: run ${run.runId} ${run.created ? 'started' : 'already exists'}`);
  // Waiting for the rest of the export is normal; a problem waiting cannot mend is a warning.
  for (const problem of outcome.problems) {
    if (problem.retryable) context.log(`blob ${target.blobName}: not synced yet: ${problem.error}`);
    else context.warn(`blob ${target.blobName}: not synced: ${problem.error}`);
  }
}

app.eventGrid(EXPORT_BLOB_DROP_FUNCTION, { handler: exportBlobDrop });
