import type { TableClient, TableEntityResult } from '@azure/data-tables';
import { isNotFound } from './storageErrors';

/** One entity, or undefined when it does not exist (any other failure is thrown). */
export async function readEntity<T extends object>(table: TableClient, partitionKey: string, rowKey: string): Promise<TableEntityResult<T> | undefined> {
  try {
    return await table.getEntity<T>(partitionKey, rowKey);
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}
