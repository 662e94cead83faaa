import type { ContainerClient } from '@azure/storage-blob';
import { isNotFound } from './storageErrors';

/**
 * Deletes every blob under a prefix (a "folder"), but those `keep` names; one already gone is no
 * failure (two cleanups may meet). Answers how many it deleted.
 */
export async function deleteBlobsUnder(container: ContainerClient, prefix: string, keep: ReadonlySet<string> = new Set(), keepUnder?: string): Promise<number> {
  let deleted = 0;
  for await (const item of container.listBlobsFlat({ prefix })) {
    if (keep.has(item.name) || (keepUnder !== undefined && item.name.startsWith(keepUnder))) continue;
    try {
      await container.deleteBlob(item.name);
      deleted += 1;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }
  return deleted;
}
