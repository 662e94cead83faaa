import { createHash } from 'node:crypto';
import type { TableClient } from '@azure/data-tables';
import type { Clock } from '../clock';
import { isNotFound } from '../storage/storageErrors';

/** One deletion, as kept for audit: the profile key's hash (never the key), the run, the time. */
export interface Erasure {
  keyHash: string;
  runId: string;
  erasedAt: string;
}

/**
 * The users a destination deleted from Braze, kept for audit beyond run retention: who (the hash of
 * the profile key, no PII), by which run, when. A user CI still lists for erasure after that is not
 * deleted again.
 */
export class ErasureLedger {
  constructor(
    private readonly table: TableClient,
    private readonly clock: Clock,
  ) {}

  private partition(modelJsonPath: string): string {
    return `erasures-${createHash('sha256').update(modelJsonPath).digest('hex').slice(0, 32)}`;
  }

  async get(modelJsonPath: string, keyHash: string): Promise<Erasure | undefined> {
    try {
      const entity = await this.table.getEntity<{ runId: string; erasedAt: string }>(this.partition(modelJsonPath), keyHash);
      return { keyHash, runId: entity.runId, erasedAt: entity.erasedAt };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Records a deletion Braze took; a repeat (a batch sent twice) keeps the first. */
  async record(modelJsonPath: string, keyHash: string, runId: string): Promise<void> {
    try {
      await this.table.createEntity({
        partitionKey: this.partition(modelJsonPath),
        rowKey: keyHash,
        runId,
        erasedAt: new Date(this.clock.now()).toISOString(),
      });
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 409) return;
      throw error;
    }
  }

  async list(modelJsonPath: string): Promise<Erasure[]> {
    const erasures: Erasure[] = [];
    const partition = this.partition(modelJsonPath);
    for await (const entity of this.table.listEntities<{ runId: string; erasedAt: string }>({ queryOptions: { filter: `PartitionKey eq '${partition}'` } }))
      erasures.push({ keyHash: entity.rowKey!, runId: entity.runId, erasedAt: entity.erasedAt });
    return erasures;
  }
}
