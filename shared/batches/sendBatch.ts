import type { BrazeClient } from '../braze/client';
import { BrazeAuthError, BrazeRetryableError, BrazeUnreachableError } from '../errors';
import { toBrazeObject } from '../mapping/profileIdentity';
import type { BatchProfile } from '../queue/messages';
import type { JsonValue } from '../ci/dataTypes';
import { BRAZE_MAX_DELETES_PER_REQUEST, BRAZE_MAX_IDENTIFY_PER_REQUEST, BRAZE_MAX_RENAMES_PER_REQUEST } from '../brazeApi';

/** What became of one profile of the batch. */
export type ProfileResult = { kind: 'delivered' } | { kind: 'rejected'; reason: string } | { kind: 'unsent' };

export interface SendResult {
  /** One per profile, in the message's order. */
  results: ProfileResult[];
  requests: number;
  /** 429 answers met on the way (each retried or handed back). */
  http429: number;
  /** Braze refused the credentials, or its endpoint cannot be reached: nothing more was sent, and nothing will be until a person fixes it. */
  haltError?: BrazeAuthError | BrazeUnreachableError;
  /** Braze could not take the rest within this invocation's budget. */
  retryError?: BrazeRetryableError;
  /** Errors Braze reported without naming a row, for the log. */
  unattributedErrors: string[];
  /** Profiles whose rename or merge Braze made (a hand-back does not ask for it again). */
  prepared: Set<number>;
}

/**
 * Sends a batch's profiles in requests of at most the workspace's objects per request and answers
 * what became of each. A request refused for its size ("Max Input Length Exceeded") teaches the
 * client the workspace's limit and is sent again in requests of that size; one Braze refuses whole
 * for another reason (a bad object) is halved until the refused profiles are isolated, so the
 * good ones still land. Bookkeeping is the caller's.
 */
export async function sendProfiles(braze: BrazeClient, profiles: BatchProfile[], deadlineMs: number): Promise<SendResult> {
  const sent: SendResult = { results: profiles.map(() => ({ kind: 'unsent' })), requests: 0, http429: 0, unattributedErrors: [], prepared: new Set() };

  const sendChunk = async (indexes: number[]): Promise<void> => {
    if (sent.haltError || sent.retryError) return;
    const objects = indexes.map((i) => toBrazeObject(profiles[i].identifier, profiles[i].attributes as Record<string, JsonValue>));
    try {
      sent.requests += 1;
      const outcome = await braze.track(objects, deadlineMs, sent);
      if (outcome.kind === 'accepted') {
        braze.confirmObjectLimit(indexes.length);
        const refused = new Map(outcome.rowErrors.map((e) => [e.index, e.type]));
        indexes.forEach((profileIndex, position) => {
          const type = refused.get(position);
          sent.results[profileIndex] = type === undefined ? { kind: 'delivered' } : { kind: 'rejected', reason: `Braze: ${type}` };
        });
        sent.unattributedErrors.push(...outcome.unattributedErrors);
        return;
      }
      if (indexes.length > 1 && outcome.status === 400 && /max input length/i.test(outcome.message)) {
        const learnt = braze.learnObjectLimit(indexes.length);
        if (learnt !== undefined)
          sent.unattributedErrors.push(
            `Braze refused ${indexes.length} objects in one request (${outcome.message}): this workspace gets at most ${learnt} per request from now on (set BRAZE_OBJECTS_PER_REQUEST, or the workspace's objectsPerRequest, to start there)`,
          );
        // At the learnt size (50 + 25, not 38 + 37): a full request confirms the limit.
        await Promise.all(chunksOf(indexes, braze.objectsPerRequest).map(sendChunk));
        return;
      }
      if (indexes.length > 1 && (outcome.status === 400 || outcome.status === 413 || outcome.status === 422)) {
        const half = Math.ceil(indexes.length / 2);
        await sendChunk(indexes.slice(0, half));
        await sendChunk(indexes.slice(half));
        return;
      }
      for (const profileIndex of indexes) sent.results[profileIndex] = { kind: 'rejected', reason: `Braze ${outcome.status}: ${outcome.message}` };
    } catch (error) {
      keepStop(sent, error);
    }
  };

  // Users to erase are deleted, by identifier kind, 50 to a request; nothing else is sent for them.
  // A request Braze took is delivered at once, whatever stops the batch after it.
  const erasing = profiles.flatMap((profile, i) => (profile.erase ? [i] : []));
  for (const kind of ['external_id', 'user_alias', 'email'] as const) {
    const ofKind = erasing.filter((i) => kind in profiles[i].identifier);
    const erased = await prepareAhead(sent, ofKind, BRAZE_MAX_DELETES_PER_REQUEST, '/users/delete', async (chunk) => {
      const outcome = await braze.deleteUsers(chunk.map((i) => profiles[i].identifier) as Parameters<BrazeClient['deleteUsers']>[0], deadlineMs, sent);
      if (outcome.kind === 'refused') return outcome;
      for (const i of chunk) sent.results[i] = { kind: 'delivered' };
      // Braze says how many it found, not which: the others were gone already, or are held under another identifier.
      if (outcome.deleted < chunk.length)
        sent.unattributedErrors.push(
          `Braze deleted ${outcome.deleted} of ${chunk.length} users asked by ${kind}: the others it did not find (deleted already, or held under another identifier)`,
        );
      return outcome;
    });
    if (!erased) return sent;
  }

  // Profiles Braze has under another spelling of their GUID are renamed before anything is written
  // to the canonical one (which would otherwise be a new user).
  const renaming = profiles.flatMap((profile, i) => (profile.rename ? [i] : []));
  const renamed = await prepareAhead(sent, renaming, BRAZE_MAX_RENAMES_PER_REQUEST, '/users/external_ids/rename', async (chunk) => {
    const outcome = await braze.renameExternalIds(
      chunk.map((i) => ({ from: profiles[i].rename!.from, to: externalIdOf(profiles[i]) })),
      deadlineMs,
      sent,
    );
    if (outcome.kind === 'refused') return outcome;
    // Braze refuses a rename whose old ID is no primary one — renamed already (by an earlier attempt
    // whose answer was lost, or before a hand-off that failed), or gone — or whose new ID is taken,
    // by a user of the same GUID. Either way the canonical ID is the one to write to: refusing the
    // profile instead would keep asking for a rename Braze can never make.
    if (outcome.failed.size) {
      sent.unattributedErrors.push(
        `Braze did not rename ${outcome.failed.size} of ${chunk.length} profiles to their GUID's canonical spelling (${[...new Set(outcome.failed.values())].join('; ')}); they are written under it from now on — a user of the old spelling that remains keeps what it had`,
      );
    }
    return outcome;
  });
  if (!renamed) return sent;

  // E-mail-only profiles whose row got a customer ID are merged into that profile before anything
  // is written to it: its clears must land after the merge, which brings the memberships along.
  const identifying = profiles.flatMap((profile, i) => (profile.identify && sent.results[i].kind === 'unsent' ? [i] : []));
  const merged = await prepareAhead(sent, identifying, BRAZE_MAX_IDENTIFY_PER_REQUEST, '/users/identify', async (chunk) => {
    const entries = chunk.map((i) => ({ externalId: externalIdOf(profiles[i]), email: profiles[i].identify!.email }));
    const outcome = await braze.identifyEmails(entries, deadlineMs, sent);
    if (outcome.kind === 'refused') return outcome;
    // No e-mail-only profile holds the address (an earlier attempt merged it, or it is gone): nothing
    // is left to merge, and the clears by external_id still go.
    if (outcome.rowErrors.length) {
      const types = [...new Set(outcome.rowErrors.map((e) => e.type))].join('; ');
      sent.unattributedErrors.push(
        `Braze merged no e-mail-only profile for ${outcome.rowErrors.length} of ${chunk.length} profiles whose row got a customer ID (${types})`,
      );
    }
    sent.unattributedErrors.push(...outcome.unattributedErrors);
    return outcome;
  });
  if (!merged) return sent;

  let pending: number[] = [];
  for (let i = 0; i < profiles.length; i++) {
    if (sent.results[i].kind !== 'unsent') continue;
    // A merge or rename with nothing to write after it is done.
    if ((profiles[i].identify || profiles[i].rename) && Object.keys(profiles[i].attributes).length === 0) sent.results[i] = { kind: 'delivered' };
    else pending.push(i);
  }
  // Until the workspace has taken a full request, one goes alone first: a refusal for its size
  // then costs one request, not one per request in flight.
  if (!braze.objectLimitConfirmed && pending.length > braze.objectsPerRequest) {
    const first = pending.slice(0, braze.objectsPerRequest);
    pending = pending.slice(first.length);
    await sendChunk(first);
  }
  await Promise.all(chunksOf(pending, braze.objectsPerRequest).map(sendChunk));
  return sent;
}

/** A credentials, endpoint or retryable error stops the batch (it is kept for the ending); any other is thrown. */
function keepStop(sent: SendResult, error: unknown): void {
  if (error instanceof BrazeAuthError || error instanceof BrazeUnreachableError) sent.haltError ??= error;
  else if (error instanceof BrazeRetryableError) sent.retryError ??= error;
  else throw error;
}

/**
 * Renames or merges that must land before the writes, in requests of `size`: a request Braze
 * refuses rejects its profiles, the others are prepared (a hand-back does not ask again). Answers
 * whether the batch goes on (no credentials, endpoint or retryable error met).
 */
async function prepareAhead(
  sent: SendResult,
  indexes: number[],
  size: number,
  endpoint: string,
  request: (chunk: number[]) => Promise<{ kind: 'accepted' } | { kind: 'accepted'; deleted: number } | { kind: 'refused'; status: number; message: string }>,
): Promise<boolean> {
  for (const chunk of chunksOf(indexes, size)) {
    try {
      sent.requests += 1;
      const outcome = await request(chunk);
      if (outcome.kind === 'refused') {
        for (const i of chunk) sent.results[i] = { kind: 'rejected', reason: `Braze refused ${endpoint} (${outcome.status}: ${outcome.message})` };
      } else for (const i of chunk) sent.prepared.add(i);
    } catch (error) {
      keepStop(sent, error);
    }
    if (sent.haltError || sent.retryError) return false;
  }
  return true;
}

function externalIdOf(profile: BatchProfile): string {
  if (!('external_id' in profile.identifier)) throw new Error(`batch profile ${profile.hash}: an identify entry needs an external_id`);
  return profile.identifier.external_id;
}

function chunksOf<T>(items: T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let start = 0; start < items.length; start += size) chunks.push(items.slice(start, start + size));
  return chunks;
}
