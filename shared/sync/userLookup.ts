import { z } from 'zod';
import { findDestination } from '../config/syncConfig';
import { modelJsonPath } from '../ci/layout';
import { canonicalGuid } from '../mapping/customerId';
import { normalizeEmail } from '../mapping/email';
import { profileKeyOf } from '../mapping/profileIdentity';
import type { ConnectorDeps } from '../runs/connectorDeps';
import type { RunRecord } from '../runs/runRecord';
import { isStateRecord, readNdjson, readPreviousState, shardOfHash, stateRecordSchema, type StateRecord } from '../state/deliveredState';
import { keyHash } from '../state/profileIndex';
import { splitPartName, touchedBatchPrefix, touchedShardBlobName } from '../runs/runBlobs';
import { isNotFound } from '../storage/storageErrors';

/** The query of GET /api/users/{id}: which destination, and what kind of identifier the id is. */
export const userQuerySchema = z.strictObject({
  destination: z.string().min(1),
  instance: z.string().min(1).optional(),
  /** external_id (default), email, or alias (the alias name, under the destination's alias label). */
  by: z.enum(['external_id', 'email', 'alias']).default('external_id'),
});

export type UserQuery = z.output<typeof userQuerySchema> & {
  /** The identifier as the caller knows it. */
  id: string;
};

export type UserLookup = { kind: 'answer'; body: UserAnswer } | { kind: 'refused'; status: 400 | 404; reason: string };

export interface UserAnswer {
  destination: string;
  instance: string;
  /** The user as the caller named them, and nothing more of who they are. */
  user: { by: UserQuery['by']; id: string };
  /** What Braze holds from the connector for the user, as of the destination's delivered state. */
  delivered: {
    segments: string[];
    subscriptions?: Record<string, string>;
    /** The run whose delivered state this is, the refresh it synced, and when it was written. */
    stateRun: string;
    refresh?: string;
    stateRunCreatedAt: string;
  } | null;
  /** When the destination deleted the user from Braze (its erasure table), if it did. */
  erased: { runId: string; erasedAt: string } | null;
  /** The runs within retention that touched the user, newest first: what each sent, or why Braze refused it. */
  runs: TouchingRun[];
}

export interface TouchingRun {
  runId: string;
  createdAt: string;
  refresh: string;
  status: string;
  /** joins, changes, leaves, merges, renames, rewrites, erases, or repairs (a reconcile). */
  change: string;
  /** The attributes it sent (names, not values). */
  attributes: string[];
  /** Braze refused the user, and why. */
  rejected?: string;
}

/**
 * Where a user stands with a destination, found through the user's own shard of the delivered
 * state (one blob), never by reading every profile: the segments Braze holds for them from the
 * connector, their subscription states, the run that wrote that state, and an erasure if there
 * was one. The answer names the user only as the caller did: never the key's other parts, never
 * an e-mail the caller did not give.
 */
export async function lookUpUser(deps: ConnectorDeps, query: UserQuery): Promise<UserLookup> {
  const destination = findDestination(deps.config, query.destination, query.instance);
  if (!destination) return { kind: 'refused', status: 404, reason: `destination "${query.destination}" is not in the mapping config` };
  const instances = query.instance ?? destination.instance;
  // The run history is listed once: for the destination's instance, and for the runs that touched the user.
  let listed: RunRecord[] | undefined;
  const allRuns = async () => (listed ??= await deps.runs.listRuns());
  let path: string;
  if (instances) path = modelJsonPath({ instance: instances, destination: destination.name });
  else {
    // The instances the destination's runs came from (within retention).
    const paths = [...new Set((await allRuns()).filter((run) => run.destination === destination.name).map((run) => run.modelJsonPath))];
    if (paths.length > 1)
      return {
        kind: 'refused',
        status: 400,
        reason: `destination "${destination.name}" has several instances: add ?instance= (${paths.map((p) => p.split('/')[0]).join(', ')})`,
      };
    if (paths.length === 0) return { kind: 'refused', status: 404, reason: `destination "${destination.name}" has no run on record: nothing was delivered` };
    path = paths[0];
  }
  const pointer = await deps.destinations.statePointer(path);
  const previous = await readPreviousState(deps.storage.stateContainer, pointer);
  // A state that keys GUIDs in one spelling holds the user under it; another keeps each spelling apart (two Braze users).
  const keys = keysOf(query, destination.matching.aliasLabel, previous.format === 2 && previous.manifest.guidKeys === true);
  if (keys.length === 0) return { kind: 'refused', status: 400, reason: `"${query.id}" is not an identifier of that form` };
  let record: StateRecord | undefined;
  let hash = keyHash(keys[0]);
  for (const key of keys) {
    const h = keyHash(key);
    const blobs =
      previous.format === 2 ? [previous.manifest.blobs[shardOfHash(h, previous.manifest.shards)]] : previous.format === 1 ? [previous.blobName] : [];
    for (const blobName of blobs)
      for await (const candidate of readNdjson(deps.storage.stateContainer, blobName, stateRecordSchema, isStateRecord, true))
        if (candidate.h === h) {
          record = candidate;
          break;
        }
    if (record) {
      hash = h;
      break;
    }
  }
  let erasure = record ? await deps.erasures.get(path, hash) : undefined;
  for (const key of record ? [] : keys) erasure ??= await deps.erasures.get(path, keyHash(key));
  const hashes = new Set(keys.map(keyHash));
  const runs: TouchingRun[] = [];
  const ofDestination = (await allRuns()).filter((run) => run.modelJsonPath === path && !run.dryRun && run.shards > 0);
  for (const run of ofDestination.sort((a, b) => b.createdAt.localeCompare(a.createdAt))) {
    const touched = await touchesOf(deps, run.runId, run.shards, hashes);
    if (touched) runs.push({ runId: run.runId, createdAt: run.createdAt, refresh: run.refreshLabel, status: run.status, ...touched });
  }
  return {
    kind: 'answer',
    body: {
      destination: destination.name,
      instance: path.split('/')[0],
      user: { by: query.by, id: query.id },
      delivered:
        record && pointer
          ? {
              segments: record.m,
              ...(record.c ? { subscriptions: record.c } : {}),
              stateRun: pointer.runId,
              ...(pointer.refreshLabel ? { refresh: pointer.refreshLabel } : {}),
              stateRunCreatedAt: pointer.runCreatedAt,
            }
          : null,
      erased: erasure ? { runId: erasure.runId, erasedAt: erasure.erasedAt } : null,
      runs,
    },
  };
}

/**
 * What one run did to the user: its line in the touched log of the user's shard (the one the shard
 * step that counted wrote), and Braze's refusal in a batch of that shard, if any. One shard's
 * blobs, not the run's.
 */
async function touchesOf(
  deps: ConnectorDeps,
  runId: string,
  shards: number,
  hashes: Set<string>,
): Promise<Omit<TouchingRun, 'runId' | 'createdAt' | 'refresh' | 'status'> | undefined> {
  const container = deps.storage.stateContainer;
  const find = async (blobName: string) => {
    let text: string;
    try {
      text = (await container.getBlobClient(blobName).downloadToBuffer()).toString('utf8');
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    // Attribute lists come as numbered lines before the profile lines that refer to them.
    const lists = new Map<number, string[]>();
    for (const line of text.split('\n')) {
      if (!line) continue;
      const entry = JSON.parse(line) as { h?: string; c?: string; n?: number; a?: string[]; r?: string };
      if (entry.h === undefined) {
        if (entry.n !== undefined && entry.a) lists.set(entry.n, entry.a);
        continue;
      }
      if (hashes.has(entry.h)) return { c: entry.c ?? '', a: entry.a ?? (entry.n !== undefined ? lists.get(entry.n) : undefined), r: entry.r };
    }
    return undefined;
  };
  const units = await deps.units.list(runId, 'shard');
  // Which batch parts count (a copy that lost its claim wrote its own): read once per run, and only if the user is found.
  let tokens: Map<string, string> | undefined;
  let found: Omit<TouchingRun, 'runId' | 'createdAt' | 'refresh' | 'status'> | undefined;
  for (const shard of new Set([...hashes].map((h) => shardOfHash(h, shards)))) {
    const unit = units.find((u) => u.index === shard && u.state === 'done');
    const entry = unit ? await find(touchedShardBlobName(runId, shard, unit.owner)) : undefined;
    if (!entry) continue;
    found = { change: entry.c, attributes: entry.a ?? [] };
    tokens ??= await deps.batches.partsTokens(runId);
    for await (const item of container.listBlobsFlat({ prefix: touchedBatchPrefix(runId, shard) })) {
      const part = splitPartName(item.name.slice(item.name.lastIndexOf('/b-') + 3));
      if (!part || tokens.get(part.id) !== part.token) continue;
      const refusal = await find(item.name);
      if (refusal) found.rejected = refusal.r;
    }
  }
  return found;
}

/** The profile key the user is held under: an external_id in its GUID's canonical spelling where the state keys GUIDs so. */
function keysOf(query: UserQuery, aliasLabel: string, canonicalGuids: boolean): string[] {
  const id = query.id.trim();
  if (!id) return [];
  if (query.by === 'email') {
    const email = normalizeEmail(id);
    return email ? [profileKeyOf({ email })] : [];
  }
  if (query.by === 'alias') return [profileKeyOf({ user_alias: { alias_name: id, alias_label: aliasLabel } })];
  return [profileKeyOf({ external_id: (canonicalGuids ? canonicalGuid(id) : undefined) ?? id })];
}
