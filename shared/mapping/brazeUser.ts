import type { JsonValue } from '../ci/dataTypes';

export type BrazeIdentifier = { external_id: string } | { email: string } | { user_alias: { alias_name: string; alias_label: string } };

/** One object of the `attributes` array of POST /users/track. */
export type BrazeAttributesObject = Record<string, JsonValue | { alias_name: string; alias_label: string }>;

export interface MappedProfile {
  /** Identity of the profile across segments and refreshes: `x:<external_id>`, `e:<email>`, `a:<label>:<name>`. */
  key: string;
  identifier: BrazeIdentifier;
  /** Mapped attributes (not memberships), as they will be sent. */
  fields: Record<string, JsonValue>;
  /** Fields dropped from this row, each with the reason: reported, never silently mangled. */
  fieldIssues: string[];
}

/** Identifier objects that create a profile when none exists need `_update_existing_only: false`. */
export function toBrazeObject(identifier: BrazeIdentifier, attributes: Record<string, JsonValue>): BrazeAttributesObject {
  if ('external_id' in identifier) return { external_id: identifier.external_id, ...attributes };
  return { ...identifier, _update_existing_only: false, ...attributes };
}

export function describeIdentifier(identifier: BrazeIdentifier): string {
  if ('external_id' in identifier) return `external_id ${identifier.external_id}`;
  if ('user_alias' in identifier) return `user_alias ${identifier.user_alias.alias_label}:${identifier.user_alias.alias_name}`;
  return 'email (redacted)';
}

export function identifierFromKey(key: string): BrazeIdentifier {
  const kind = key.slice(0, 2);
  const rest = key.slice(2);
  if (kind === 'x:') return { external_id: rest };
  if (kind === 'e:') return { email: rest };
  const colon = rest.indexOf(':');
  return { user_alias: { alias_label: rest.slice(0, colon), alias_name: rest.slice(colon + 1) } };
}
