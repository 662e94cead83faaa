import type { ContainerClient } from '@azure/storage-blob';
import { runFolder } from '../runs/rejectsReport';
import { encodeMessage, type BrazeBatchMessage } from '../queue/messages';

export function parkedPrefix(runId: string): string {
  return `${runFolder(runId)}/parked/`;
}

/** Keeps a batch that cannot be sent now (bad key, gave up on Braze) until a resume re-queues it. */
export async function parkBatch(container: ContainerClient, message: BrazeBatchMessage): Promise<void> {
  const text = encodeMessage({ ...message, deferrals: 0 });
  await container.getBlockBlobClient(`${parkedPrefix(message.runId)}${message.batchId}.msg`).upload(text, Buffer.byteLength(text));
}

export async function* listParked(container: ContainerClient, runId: string): AsyncGenerator<{ blobName: string; text: string }> {
  for await (const item of container.listBlobsFlat({ prefix: parkedPrefix(runId) })) {
    const text = (await container.getBlobClient(item.name).downloadToBuffer()).toString('utf8');
    yield { blobName: item.name, text };
  }
}
