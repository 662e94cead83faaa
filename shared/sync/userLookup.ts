import { z } from 'zod';
import { findDestination } from '../config/syncConfig';
import { modelJsonPath } from '../ci/layout';
import { canonicalGuid } from '../mapping/customerId';
import { normalizeEmail } from '../mapping/email';
import { profileKeyOf } from '../mapping/profileIdentity';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { isStateRecord, readNdjson, readPreviousState, shardOfHash, stateRecordSchema, type StateRecord } from '../state/deliveredState';
import { keyHash } from '../state/profileIndex';

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
  let path: string;
  if (instances) path = modelJsonPath({ instance: instances, destination: destination.name });
  else {
    // The instances the destination's runs came from (within retention).
    const paths = [...new Set((await deps.runs.listRuns()).filter((run) => run.destination === destination.name).map((run) => run.modelJsonPath))];
    if (paths.length > 1)
      return {
        kind: 'refused',
        status: 400,
        reason: `destination "${destination.name}" has several instances: add ?instance= (${paths.map((p) => p.split('/')[0]).join(', ')})`,
      };
    if (paths.length === 0) return { kind: 'refused', status: 404, reason: `destination "${destination.name}" has no run on record: nothing was delivered` };
    path = paths[0];
  }
  const keys = keysOf(query, destination.matching.aliasLabel);
  if (keys.length === 0) return { kind: 'refused', status: 400, reason: `"${query.by}" is not an identifier of that form` };

  const pointer = await deps.destinations.statePointer(path);
  const previous = await readPreviousState(deps.storage.stateContainer, pointer);
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
  const erasure = (await deps.erasures.get(path, hash)) ?? null;
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
    },
  };
}

/** The profile keys the user may be held under: an external_id as given and in its GUID's canonical spelling. */
function keysOf(query: UserQuery, aliasLabel: string): string[] {
  const id = query.id.trim();
  if (!id) return [];
  if (query.by === 'email') {
    const email = normalizeEmail(id);
    return email ? [profileKeyOf({ email })] : [];
  }
  if (query.by === 'alias') return [profileKeyOf({ user_alias: { alias_name: id, alias_label: aliasLabel } })];
  const canonical = canonicalGuid(id);
  return [...new Set([profileKeyOf({ external_id: id }), ...(canonical ? [profileKeyOf({ external_id: canonical })] : [])])];
}
