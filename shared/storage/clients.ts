import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';
import { QueueServiceClient, type QueueClient } from '@azure/storage-queue';
import { TableClient } from '@azure/data-tables';
import { DefaultAzureCredential } from '@azure/identity';
import type { AppSettings, StorageSettings } from '../config/settings';
import { InvalidInputError } from '../errors';
import { BATCH_QUEUE, RUN_QUEUE } from '../queue/names';

export interface StorageClients {
  exportContainer: ContainerClient;
  stateContainer: ContainerClient;
  batchQueue: QueueClient;
  batchPoisonQueue: QueueClient;
  runQueue: QueueClient;
  runPoisonQueue: QueueClient;
  runsTable: TableClient;
}

/**
 * Locally a connection string (Azurite); in Azure identity-based access through service URIs, so
 * no storage key sits in app settings.
 */
export function createStorageClients(settings: AppSettings): StorageClients {
  const storage = settings.storage;
  const blobService = blobServiceOf(storage);
  const queueService = queueServiceOf(storage);
  return {
    exportContainer: blobService.getContainerClient(settings.exportContainer),
    stateContainer: blobService.getContainerClient(settings.stateContainer),
    batchQueue: queueService.getQueueClient(BATCH_QUEUE),
    batchPoisonQueue: queueService.getQueueClient(`${BATCH_QUEUE}-poison`),
    runQueue: queueService.getQueueClient(RUN_QUEUE),
    runPoisonQueue: queueService.getQueueClient(`${RUN_QUEUE}-poison`),
    runsTable: tableClientOf(storage, settings.runsTable),
  };
}

let credential: DefaultAzureCredential | undefined;
function azureCredential(): DefaultAzureCredential {
  credential ??= new DefaultAzureCredential();
  return credential;
}

function blobServiceOf(storage: StorageSettings): BlobServiceClient {
  if (storage.connectionString) return BlobServiceClient.fromConnectionString(storage.connectionString);
  return new BlobServiceClient(storage.blobServiceUri!, azureCredential());
}

function queueServiceOf(storage: StorageSettings): QueueServiceClient {
  if (storage.connectionString) return QueueServiceClient.fromConnectionString(storage.connectionString);
  return new QueueServiceClient(storage.queueServiceUri!, azureCredential());
}

function tableClientOf(storage: StorageSettings, table: string): TableClient {
  if (storage.connectionString) {
    return TableClient.fromConnectionString(storage.connectionString, table, { allowInsecureConnection: true });
  }
  if (!storage.tableServiceUri) {
    throw new InvalidInputError('AzureWebJobsStorage__tableServiceUri is required for identity-based access (run records live in a table)');
  }
  return new TableClient(storage.tableServiceUri, table, azureCredential());
}

/** Creates what the connector writes to; the export container belongs to CI and must exist. */
export async function ensureStorage(clients: StorageClients): Promise<void> {
  await Promise.all([
    clients.stateContainer.createIfNotExists(),
    clients.batchQueue.createIfNotExists(),
    clients.batchPoisonQueue.createIfNotExists(),
    clients.runQueue.createIfNotExists(),
    clients.runPoisonQueue.createIfNotExists(),
    clients.runsTable.createTable(),
  ]);
}
