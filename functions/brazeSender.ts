import { app, type InvocationContext } from '@azure/functions';
import { BATCH_QUEUE } from '../shared/storage/queueNames';
import { deliverBatch } from '../shared/sync/deliverBatch';
import { connector } from './connector';

export async function brazeSender(message: unknown, context: InvocationContext): Promise<void> {
  // The queue trigger's insertion time gives the batch's queue lag.
  const inserted = context.triggerMetadata?.insertionTime;
  const enqueuedAtMs = inserted instanceof Date ? inserted.getTime() : typeof inserted === 'string' ? Date.parse(inserted) : undefined;
  const result = await deliverBatch(connector(), message, { enqueuedAtMs: Number.isFinite(enqueuedAtMs) ? enqueuedAtMs : undefined });
  const counts = 'outcome' in result ? result.outcome : undefined;
  context.log(
    `batch ${result.kind}${counts ? `: ${counts.usersDelivered} delivered, ${counts.usersRejected} rejected, ${counts.usersFailed} failed, ${counts.usersParked} parked` : ''} (dequeue ${String(context.triggerMetadata?.dequeueCount ?? '?')})`,
  );
}

app.storageQueue('brazeSender', {
  queueName: BATCH_QUEUE,
  connection: 'AzureWebJobsStorage',
  handler: brazeSender,
});
