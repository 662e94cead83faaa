import { createHash } from 'node:crypto';
import type { TableClient } from '@azure/data-tables';
import type { Clock } from '../braze/clock';
import { retryOnConflict } from '../storage/etagRetry';
import { isConflict, isNotFound } from '../storage/storageErrors';
import { readEntity } from '../storage/tableEntities';

const LOCK_PARTITION = 'destination-locks';
const STATE_PARTITION = 'delivered-state';

/** Which blob holds a destination's delivered state, and which run wrote it. */
export interface StatePointer {
  /** The state blob (format 1) or the manifest of the state's shards (format 2). */
  blobName: string;
  /** Absent on pointers written by an older version: format 1. */
  format?: number;
  runId: string;
  runCreatedAt: string;
  profiles: number;
  etag?: string;
}

function destinationRow(modelJsonPath: string): string {
  return createHash('sha256').update(modelJsonPath).digest('hex').slice(0, 32);
}

/**
 * Per export destination: the run that owns it (one at a time, so each diff starts from the state
 * the previous run left) and the pointer to its delivered state.
 */
export class DestinationStore {
  constructor(
    private readonly table: TableClient,
    private readonly clock: Clock,
  ) {}

  /** The run that currently owns a destination, if any. */
  async activeRun(modelJsonPath: string): Promise<{ runId: string; etag?: string } | undefined> {
    const lock = await readEntity<{ runId: string }>(this.table, LOCK_PARTITION, destinationRow(modelJsonPath));
    return lock && { runId: lock.runId, etag: lock.etag };
  }

  /** Takes the destination for a run, replacing the lock it saw (if any); false when another write got there first. */
  async claim(modelJsonPath: string, runId: string, seen: { etag?: string } | undefined): Promise<boolean> {
    const entity = { partitionKey: LOCK_PARTITION, rowKey: destinationRow(modelJsonPath), runId };
    try {
      if (seen?.etag) await this.table.updateEntity(entity, 'Replace', { etag: seen.etag });
      else await this.table.createEntity(entity);
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw error;
    }
  }

  async release(modelJsonPath: string, runId: string): Promise<void> {
    const lock = await this.activeRun(modelJsonPath);
    if (!lock || lock.runId !== runId) return;
    try {
      await this.table.deleteEntity(LOCK_PARTITION, destinationRow(modelJsonPath), { etag: lock.etag });
    } catch (error) {
      if (!isConflict(error) && !isNotFound(error)) throw error;
    }
  }

  async statePointer(modelJsonPath: string): Promise<StatePointer | undefined> {
    const entity = await readEntity<Omit<StatePointer, 'etag'>>(this.table, STATE_PARTITION, destinationRow(modelJsonPath));
    if (!entity) return undefined;
    return {
      blobName: entity.blobName,
      format: entity.format === undefined ? undefined : Number(entity.format),
      runId: entity.runId,
      runCreatedAt: entity.runCreatedAt,
      profiles: Number(entity.profiles),
      etag: entity.etag,
    };
  }

  /**
   * Points the destination at a new state blob, unless a run that started later already wrote
   * one: an old run finishing late must not roll the state back.
   */
  async switchStatePointer(modelJsonPath: string, next: Omit<StatePointer, 'etag'>): Promise<{ switched: boolean; previous?: StatePointer }> {
    return retryOnConflict(
      'delivered state pointer',
      async () => {
        const previous = await this.statePointer(modelJsonPath);
        if (previous && previous.runId !== next.runId && previous.runCreatedAt > next.runCreatedAt) return { switched: false, previous };
        const entity = { partitionKey: STATE_PARTITION, rowKey: destinationRow(modelJsonPath), ...next };
        if (previous) await this.table.updateEntity(entity, 'Replace', { etag: previous.etag });
        else await this.table.createEntity(entity);
        return { switched: true, previous };
      },
      this.clock.sleep,
    );
  }
}
