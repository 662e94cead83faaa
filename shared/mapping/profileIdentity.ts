import type { JsonValue } from '../ci/dataTypes';
import { BRAZE_SUBSCRIPTION_FIELDS } from '../brazeApi';

/**
 * Who a profile is, in one place: the identifiers Braze knows, the profile key the connector keeps
 * in its state, and what counts as a data point.
 */

export type BrazeIdentifier = { external_id: string } | { email: string } | { user_alias: { alias_name: string; alias_label: string } };

/** One object of the `attributes` array of POST /users/track. */
export type BrazeAttributesObject = Record<string, JsonValue | { alias_name: string; alias_label: string }>;

/** Identifier objects that create a profile when none exists need `_update_existing_only: false`. */
export function toBrazeObject(identifier: BrazeIdentifier, attributes: Record<string, JsonValue>): BrazeAttributesObject {
  if ('external_id' in identifier) return { external_id: identifier.external_id, ...attributes };
  return { ...identifier, _update_existing_only: false, ...attributes };
}

/**
 * The profile key: `x:<external_id>`, `e:<email>`, `a:<label>:<name>`. Stable across refreshes, so
 * the delivered state can find a profile again. In an alias label `%` and `:` are escaped, so a
 * label containing `:` still parses back; labels without them (the default) are written as is.
 */
export function profileKeyOf(identifier: BrazeIdentifier): string {
  if ('external_id' in identifier) return `x:${identifier.external_id}`;
  if ('email' in identifier) return `e:${identifier.email}`;
  const label = identifier.user_alias.alias_label.replace(/%/g, '%25').replace(/:/g, '%3A');
  return `a:${label}:${identifier.user_alias.alias_name}`;
}

export function identifierFromKey(key: string): BrazeIdentifier {
  const kind = key.slice(0, 2);
  const rest = key.slice(2);
  if (kind === 'x:') return { external_id: rest };
  if (kind === 'e:') return { email: rest };
  if (kind !== 'a:') throw new Error(`profile key of unknown kind "${kind}"`);
  const colon = rest.indexOf(':');
  const label = rest.slice(0, colon).replace(/%3A/gi, ':').replace(/%25/g, '%');
  return { user_alias: { alias_label: label, alias_name: rest.slice(colon + 1) } };
}

/** How a profile is named in reports and logs: never by e-mail. */
export function describeIdentifier(identifier: BrazeIdentifier): string {
  if ('external_id' in identifier) return `external_id ${identifier.external_id}`;
  if ('user_alias' in identifier) return `user_alias ${identifier.user_alias.alias_label}:${identifier.user_alias.alias_name}`;
  return 'email (redacted)';
}

/**
 * Braze bills one data point per attribute written (a null included); the identifier is not one,
 * nor a subscription state (data_points.md: "Subscription state changes globally and around
 * subscription groups" log none). The attributes passed here never hold the identifier, so every
 * other key is a data point — the e-mail too, when it travels beside an external_id or alias.
 */
export function dataPointsOf(attributes: Record<string, unknown>): number {
  let n = 0;
  for (const name in attributes) if (!BRAZE_SUBSCRIPTION_FIELDS.has(name)) n += 1;
  return n;
}
