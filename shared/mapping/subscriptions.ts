import type { JsonValue } from '../ci/dataTypes';
import { BRAZE_CHANNEL_STATES, BRAZE_GROUP_STATES } from '../brazeApi';

/** Reading consent columns as Braze's subscription states (see BRAZE_CHANNEL_STATES in brazeApi). */

/**
 * What a consent column usually holds, read when a subscription has no `values` of its own: yes/no
 * words and booleans, opt-in/opt-out words, Braze's own state names. A channel's "yes" is an
 * explicit opt-in; a group knows only subscribed and unsubscribed.
 */
const YES = ['true', 'yes', 'y', '1', 'opted_in', 'opt_in', 'optin', 'granted', 'consented'];
const NO = ['false', 'no', 'n', '0', 'unsubscribed', 'opted_out', 'opt_out', 'optout', 'denied', 'withdrawn', 'revoked'];

function defaultStates(kind: 'channel' | 'group'): Map<string, string> {
  const states = new Map<string, string>();
  for (const word of YES) states.set(word, kind === 'channel' ? 'opted_in' : 'subscribed');
  for (const word of NO) states.set(word, 'unsubscribed');
  states.set('subscribed', 'subscribed');
  return states;
}

/** A CI value as a lookup key: trimmed, lower case, spaces and hyphens as "_" ("Opted In", "opted-in" → opted_in). */
export const lookupKey = (value: JsonValue): string =>
  String(value)
    .trim()
    .toLowerCase()
    .replace(/[\s-]+/g, '_');

export type SubscriptionReading = { ok: true; state: string } | { ok: true; state: undefined } | { ok: false; reason: string };

/**
 * Reads one subscription column. `values` (CI value → Braze state) replaces the usual words when
 * given; Braze's own state names are always taken. An empty cell says nothing: no state is sent
 * and Braze keeps the one it has (an unsubscribe made in Braze is never undone by a blank).
 */
export function subscriptionReader(kind: 'channel' | 'group', values: Record<string, string> | undefined): (value: JsonValue) => SubscriptionReading {
  const known = kind === 'channel' ? BRAZE_CHANNEL_STATES : BRAZE_GROUP_STATES;
  const states = values ? new Map<string, string>(known.map((s) => [s, s])) : defaultStates(kind);
  if (values) for (const [from, to] of Object.entries(values)) states.set(lookupKey(from), to);
  const accepted = values ? [...new Set([...Object.keys(values), ...known])] : known;
  return (value) => {
    if (value === null || (typeof value === 'string' && value.trim() === '')) return { ok: true, state: undefined };
    const state = states.get(lookupKey(value));
    if (state !== undefined) return { ok: true, state };
    return { ok: false, reason: `not a subscription value this mapping knows (it takes ${accepted.map((v) => JSON.stringify(v)).join(', ')})` };
  };
}

/** The `subscription_groups` value for a row's groups, in one order so an unchanged row compares equal. */
export function subscriptionGroupsValue(states: Map<string, string>): JsonValue {
  return [...states].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, state]) => ({ subscription_group_id: id, subscription_state: state }));
}
