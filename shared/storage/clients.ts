import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';
import { QueueServiceClient, type QueueClient } from '@azure/storage-queue';
import { TableClient, type TableServiceClientOptions } from '@azure/data-tables';
import { DefaultAzureCredential } from '@azure/identity';
import type { AppSettings, StorageSettings } from '../config/settings';
import { InvalidInputError } from '../errors';
import { BATCH_QUEUE, RUN_QUEUE } from './queueNames';

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
    exportContainer: exportBlobServiceOf(storage, blobService).getContainerClient(settings.exportContainer),
    stateContainer: blobService.getContainerClient(settings.stateContainer),
    batchQueue: queueService.getQueueClient(BATCH_QUEUE),
    batchPoisonQueue: queueService.getQueueClient(`${BATCH_QUEUE}-poison`),
    runQueue: queueService.getQueueClient(RUN_QUEUE),
    runPoisonQueue: queueService.getQueueClient(`${RUN_QUEUE}-poison`),
    runsTable: tableClientOf(storage, settings.runsTable),
  };
}

let credential: DefaultAzureCredential | undefined;
/** The app's managed identity in Azure (the user-assigned one when its client id is set), a developer's login locally. */
export function azureCredential(clientId?: string): DefaultAzureCredential {
  credential ??= new DefaultAzureCredential(clientId ? { managedIdentityClientId: clientId } : {});
  return credential;
}

type PipelinePolicy = NonNullable<TableServiceClientOptions['additionalPolicies']>[number]['policy'];

/** Blob and queue clients retry 503 ServerBusy, 500, timeouts and dropped connections with exponential backoff. */
function storagePipelineOptions(storage: StorageSettings) {
  const { maxTries, tryTimeoutMs, retryDelayMs, maxRetryDelayMs } = storage.retry;
  return { retryOptions: { maxTries, tryTimeoutInMs: tryTimeoutMs, retryDelayInMs: retryDelayMs, maxRetryDelayInMs: maxRetryDelayMs } };
}

/**
 * The tables client retries 5xx and dropped connections the same way. Its pipeline has no per-try
 * timeout of its own: without one, a request whose connection silently died would hold the
 * function until the host's timeout; with it, that call fails and the queue retries the work.
 */
function tableOptions(storage: StorageSettings, allowInsecureConnection: boolean): TableServiceClientOptions {
  const { maxTries, tryTimeoutMs, retryDelayMs, maxRetryDelayMs } = storage.retry;
  const tryTimeout: PipelinePolicy = {
    name: 'connectorTryTimeout',
    sendRequest: (request, next) => {
      if (!request.timeout) request.timeout = tryTimeoutMs;
      return next(request);
    },
  };
  return {
    allowInsecureConnection,
    retryOptions: { maxRetries: maxTries - 1, retryDelayInMs: retryDelayMs, maxRetryDelayInMs: maxRetryDelayMs },
    additionalPolicies: [{ policy: tryTimeout, position: 'perRetry' }],
  };
}

function blobServiceOf(storage: StorageSettings): BlobServiceClient {
  if (storage.connectionString) return BlobServiceClient.fromConnectionString(storage.connectionString, storagePipelineOptions(storage));
  return new BlobServiceClient(storage.blobServiceUri!, azureCredential(storage.clientId), storagePipelineOptions(storage));
}

/** CI usually exports to an account of its own; the app only reads from it. */
function exportBlobServiceOf(storage: StorageSettings, appBlobService: BlobServiceClient): BlobServiceClient {
  if (storage.exportConnectionString) return BlobServiceClient.fromConnectionString(storage.exportConnectionString, storagePipelineOptions(storage));
  if (storage.exportBlobServiceUri)
    return new BlobServiceClient(storage.exportBlobServiceUri, azureCredential(storage.clientId), storagePipelineOptions(storage));
  return appBlobService;
}

function queueServiceOf(storage: StorageSettings): QueueServiceClient {
  if (storage.connectionString) return QueueServiceClient.fromConnectionString(storage.connectionString, storagePipelineOptions(storage));
  return new QueueServiceClient(storage.queueServiceUri!, azureCredential(storage.clientId), storagePipelineOptions(storage));
}

function tableClientOf(storage: StorageSettings, table: string): TableClient {
  if (storage.connectionString) return TableClient.fromConnectionString(storage.connectionString, table, tableOptions(storage, true));
  if (!storage.tableServiceUri) {
    throw new InvalidInputError('AzureWebJobsStorage__tableServiceUri is required for identity-based access (run records live in a table)');
  }
  return new TableClient(storage.tableServiceUri, table, azureCredential(storage.clientId), tableOptions(storage, false));
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
