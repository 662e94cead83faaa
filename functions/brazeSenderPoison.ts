import { app, type InvocationContext } from '@azure/functions';
import { BATCH_QUEUE } from '../shared/storage/queueNames';
import { handlePoisonBatch } from '../shared/sync/poisonBatch';
import { connector } from './connector';

export async function brazeSenderPoison(message: unknown, _context: InvocationContext): Promise<void> {
  await handlePoisonBatch(connector(), message);
}

app.storageQueue('brazeSenderPoison', {
  queueName: `${BATCH_QUEUE}-poison`,
  connection: 'AzureWebJobsStorage',
  handler: brazeSenderPoison,
});
