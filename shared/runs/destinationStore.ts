import { createHash } from 'node:crypto';
import { odata, type TableClient } from '@azure/data-tables';
import type { Clock } from '../clock';
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
  /** When CI took the snapshot Braze now holds (ISO 8601 UTC); absent on pointers written by an older version. */
  refreshTime?: string;
  /** The refresh's run folder, for people to read. */
  refreshLabel?: string;
  /** The lock generation of the run that wrote it; absent on pointers written by an older version. */
  generation?: number;
  etag?: string;
}

/**
 * The destination's lock as read: the run holding it (none when free) and its generation, which
 * every claim raises by one — so the runs that held a destination are ordered exactly, whatever
 * their clocks or the order their finalizers end in.
 */
export interface DestinationLock {
  runId?: string;
  generation: number;
  /**
   * A superseded run that may have delivered part of its snapshot: what it sent may be in Braze or
   * not, so the next run to complete sends those profiles in full (and clears what that run may
   * have set). Cleared by the run that completes having done so.
   */
  uncertainRun?: string;
  /** Absent when the destination was never claimed (no lock row yet). */
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

  async lock(modelJsonPath: string): Promise<DestinationLock> {
    return this.lockOfKey(destinationRow(modelJsonPath));
  }

  private async lockOfKey(destinationKey: string): Promise<DestinationLock> {
    const row = await readEntity<{ runId?: string; generation?: number; uncertainRun?: string }>(this.table, LOCK_PARTITION, destinationKey);
    if (!row) return { generation: 0 };
    return { runId: row.runId || undefined, generation: Number(row.generation ?? 0), uncertainRun: row.uncertainRun || undefined, etag: row.etag };
  }

  /**
   * Writes a destination's lock row as it now is: over the one read (`etag`), or as a new row.
   * Answers the new ETag; a conflict or a missing row throws, for the caller to judge.
   */
  private async writeLock(destinationKey: string, lock: Omit<DestinationLock, 'etag'>, etag: string | undefined): Promise<string | undefined> {
    const entity = {
      partitionKey: LOCK_PARTITION,
      rowKey: destinationKey,
      runId: lock.runId ?? '',
      generation: lock.generation,
      uncertainRun: lock.uncertainRun ?? '',
    };
    const answer = etag ? await this.table.updateEntity(entity, 'Replace', { etag }) : await this.table.createEntity(entity);
    return answer.etag;
  }

  /** Every destination's lock that a run holds, by the destination's key. */
  async heldLocks(): Promise<{ key: string; runId: string }[]> {
    const held: { key: string; runId: string }[] = [];
    for await (const row of this.table.listEntities<{ runId?: string }>({ queryOptions: { filter: odata`PartitionKey eq ${LOCK_PARTITION}` } }))
      if (row.runId) held.push({ key: String(row.rowKey), runId: row.runId });
    return held;
  }

  /** Frees a destination by its key if `runId` still holds it (a run that ended without freeing it). */
  async releaseByKey(destinationKey: string, runId: string): Promise<boolean> {
    const lock = await this.lockOfKey(destinationKey);
    if (lock.runId !== runId || !lock.etag) return false;
    try {
      await this.writeLock(destinationKey, { ...lock, runId: undefined }, lock.etag);
      return true;
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return false;
      throw error;
    }
  }

  /** Every destination's uncertain run (their blobs must stay until a run has re-sent what they may have delivered). */
  async uncertainRuns(): Promise<Set<string>> {
    const runs = new Set<string>();
    for await (const row of this.table.listEntities<{ uncertainRun?: string }>({ queryOptions: { filter: odata`PartitionKey eq ${LOCK_PARTITION}` } }))
      if (row.uncertainRun) runs.add(row.uncertainRun);
    return runs;
  }

  /** The run that currently owns a destination, if any. */
  async activeRun(modelJsonPath: string): Promise<string | undefined> {
    return (await this.lock(modelJsonPath)).runId;
  }

  /**
   * Takes the destination for a run if the lock is still as `seen` (the same ETag, or still
   * absent): answers the generation taken, or undefined when another write got there first.
   */
  async claim(modelJsonPath: string, runId: string, seen: DestinationLock, uncertainRun = seen.uncertainRun): Promise<number | undefined> {
    const generation = seen.generation + 1;
    try {
      await this.writeLock(destinationRow(modelJsonPath), { runId, generation, uncertainRun }, seen.etag);
      return generation;
    } catch (error) {
      // A lock row deleted by an older version's release is gone: the next read sees it absent.
      if (isConflict(error) || isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Frees the destination if `runId` holds it; the row stays, keeping its generation. */
  async release(modelJsonPath: string, runId: string): Promise<void> {
    await retryOnConflict(
      'destination lock',
      async () => {
        const lock = await this.lock(modelJsonPath);
        if (lock.runId !== runId || !lock.etag) return;
        try {
          await this.writeLock(destinationRow(modelJsonPath), { ...lock, runId: undefined }, lock.etag);
        } catch (error) {
          if (!isNotFound(error)) throw error;
        }
      },
      this.clock.sleep,
    );
  }

  /**
   * Names a run whose deliveries are not known (it is about to be superseded) on the lock, if the lock
   * is still as `seen`: answers the lock as it now is, or undefined when it changed meanwhile.
   */
  async markUncertain(modelJsonPath: string, seen: DestinationLock, uncertainRun: string): Promise<DestinationLock | undefined> {
    if (!seen.etag) return undefined;
    try {
      const etag = await this.writeLock(destinationRow(modelJsonPath), { ...seen, uncertainRun }, seen.etag);
      return { ...seen, uncertainRun, etag };
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** The run that re-sent an uncertain run's profiles completed: nothing of that run is uncertain any more. */
  async settleUncertain(modelJsonPath: string, uncertainRun: string): Promise<boolean> {
    return retryOnConflict(
      'destination lock',
      async () => {
        const lock = await this.lock(modelJsonPath);
        if (lock.uncertainRun !== uncertainRun || !lock.etag) return false;
        await this.writeLock(destinationRow(modelJsonPath), { ...lock, uncertainRun: undefined }, lock.etag);
        return true;
      },
      this.clock.sleep,
    );
  }

  async statePointer(modelJsonPath: string): Promise<StatePointer | undefined> {
    return this.statePointerOfKey(destinationRow(modelJsonPath));
  }

  /** The state pointer by the destination's key (the folder its state lives under: `state/<key>/`). */
  async statePointerOfKey(destinationKey: string): Promise<StatePointer | undefined> {
    const entity = await readEntity<Omit<StatePointer, 'etag'>>(this.table, STATE_PARTITION, destinationKey);
    if (!entity) return undefined;
    return {
      blobName: entity.blobName,
      format: entity.format === undefined ? undefined : Number(entity.format),
      runId: entity.runId,
      runCreatedAt: entity.runCreatedAt,
      profiles: Number(entity.profiles),
      refreshTime: entity.refreshTime || undefined,
      refreshLabel: entity.refreshLabel || undefined,
      generation: entity.generation === undefined ? undefined : Number(entity.generation),
      etag: entity.etag,
    };
  }

  /**
   * Points the destination at a new state blob, unless a run that held the destination after this
   * one already wrote one: a run finishing late must not roll the state back.
   */
  async switchStatePointer(modelJsonPath: string, next: Omit<StatePointer, 'etag'>): Promise<{ switched: boolean; previous?: StatePointer }> {
    return retryOnConflict(
      'delivered state pointer',
      async () => {
        const previous = await this.statePointer(modelJsonPath);
        if (previous && previous.runId !== next.runId && wroteLater(previous, next)) return { switched: false, previous };
        const fields = Object.fromEntries(Object.entries(next).filter(([, value]) => value !== undefined));
        const entity = { partitionKey: STATE_PARTITION, rowKey: destinationRow(modelJsonPath), ...fields };
        if (previous) await this.table.updateEntity(entity, 'Replace', { etag: previous.etag });
        else await this.table.createEntity(entity);
        return { switched: true, previous };
      },
      this.clock.sleep,
    );
  }
}

/**
 * `a` held the destination after `b`: by lock generation when both have one (exact), else by when
 * the runs were created (pointers and runs of an older version).
 */
export function wroteLater(a: Pick<StatePointer, 'generation' | 'runCreatedAt'>, b: Pick<StatePointer, 'generation' | 'runCreatedAt'>): boolean {
  if (a.generation && b.generation) return a.generation > b.generation;
  return a.runCreatedAt > b.runCreatedAt;
}
