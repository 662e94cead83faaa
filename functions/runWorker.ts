import { app, type InvocationContext } from '@azure/functions';
import { RUN_QUEUE } from '../shared/storage/queueNames';
import { processRunMessage } from '../shared/sync/processRunMessage';
import { connector } from './connector';

export async function runWorker(message: unknown, context: InvocationContext): Promise<void> {
  const result = await processRunMessage(connector(), message);
  if (result.kind === 'deferred') context.log(`run deferred: ${result.reason}`);
}

app.storageQueue('runWorker', {
  queueName: RUN_QUEUE,
  connection: 'AzureWebJobsStorage',
  handler: runWorker,
});
