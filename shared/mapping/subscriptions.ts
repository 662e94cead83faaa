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

/**
 * A mapped row's subscription states as items: `email_subscribe`, `push_subscribe`, and
 * `g:<group id>` for each group — the unit in which a state is compared with what Braze last
 * accepted, so one group's change does not send the others.
 */
export function consentItems(fields: Record<string, JsonValue>): Record<string, string> {
  const items: Record<string, string> = {};
  for (const field of ['email_subscribe', 'push_subscribe'] as const) if (typeof fields[field] === 'string') items[field] = fields[field];
  const groups = fields.subscription_groups;
  if (Array.isArray(groups))
    for (const group of groups) {
      const entry = group as { subscription_group_id?: unknown; subscription_state?: unknown };
      if (typeof entry.subscription_group_id === 'string' && typeof entry.subscription_state === 'string')
        items[`g:${entry.subscription_group_id}`] = entry.subscription_state;
    }
  return items;
}

/**
 * What of a row's subscription states goes to Braze, given the ones Braze last accepted from the
 * connector (`delivered`; none known: all of them): the row's fields with only the changed states
 * left in — a channel whose state changed, the groups whose state changed — and the states Braze
 * will hold from the connector once they are accepted. An empty cell sends nothing and forgets
 * nothing: Braze keeps what it has.
 */
export function consentToSend(
  fields: Record<string, JsonValue>,
  delivered: Record<string, string> | undefined,
): { fields: Record<string, JsonValue>; sent: string[]; next: Record<string, string> | undefined } {
  const now = consentItems(fields);
  const changed = Object.keys(now).filter((item) => delivered?.[item] !== now[item]);
  const next = Object.keys(now).length || delivered ? { ...delivered, ...now } : undefined;
  const out: Record<string, JsonValue> = {};
  for (const [name, value] of Object.entries(fields)) {
    if (name === 'email_subscribe' || name === 'push_subscribe') {
      if (changed.includes(name)) out[name] = value;
    } else if (name === 'subscription_groups') {
      const groups = (value as { subscription_group_id: string }[]).filter((group) => changed.includes(`g:${group.subscription_group_id}`));
      if (groups.length) out[name] = groups as JsonValue;
    } else out[name] = value;
  }
  const sent = [...new Set(changed.map((item) => (item.startsWith('g:') ? 'subscription_groups' : item)))];
  return { fields: out, sent, next: next && Object.keys(next).length ? sortedItems(next) : undefined };
}

function sortedItems(items: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(items).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
