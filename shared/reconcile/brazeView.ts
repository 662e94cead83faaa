import { z } from 'zod';
import type { DestinationConfig } from '../config/syncConfig';
import { normalizeEmail } from '../mapping/email';
import { profileKeyOf } from '../mapping/profileIdentity';
import { fnv1a32, mappedFieldNames, MISSING } from '../mapping/fieldHashes';

/**
 * Braze's side of a reconcile: the users a segment export lists, reduced to what the connector can
 * compare with Customer Insights — the profile key our matching rules would give the user, the
 * segment it is a member of, and a short hash of each mapped field's value as Braze holds it.
 */

/**
 * Standard attributes a segment export can show at the top of a user. A mapped field with one of
 * these names is asked for by name; any other mapped field is a custom attribute.
 */
const EXPORTABLE_STANDARD_FIELDS = new Set(['email', 'first_name', 'last_name', 'phone', 'gender', 'country', 'language', 'home_city', 'dob', 'time_zone']);

/** One line of a segment export, as far as a reconcile reads it (Braze adds more fields over time). */
export const exportedUserSchema = z.looseObject({
  external_id: z.string().optional(),
  email: z.string().optional(),
  user_aliases: z.array(z.looseObject({ alias_name: z.string(), alias_label: z.string() })).optional(),
  custom_attributes: z.record(z.string(), z.unknown()).optional(),
});
export type ExportedUser = z.output<typeof exportedUserSchema>;

/** `fields_to_export` for a destination: the identifiers, the custom attributes, and the standard attributes it maps. */
export function exportFieldsFor(destination: DestinationConfig): string[] {
  const standard = mappedFieldNames(destination).filter((name) => EXPORTABLE_STANDARD_FIELDS.has(name));
  return [...new Set(['external_id', 'user_aliases', 'email', 'custom_attributes', ...standard])];
}

/**
 * The profile keys the connector could have given this user, in the order its matching rules
 * prefer them: the external_id when customer IDs are external IDs, then each fallback it carries
 * (e-mail, the alias of the destination's label). The first is the key the user is known by;
 * a CI row without a customer ID is keyed by a later one. A user with none of them is not one the
 * connector could have written.
 */
export function exportedUserKeys(user: ExportedUser, destination: DestinationConfig): string[] {
  const { customerIdIsExternalId, fallbackIdentifiers, aliasLabel } = destination.matching;
  const keys: string[] = [];
  if (customerIdIsExternalId && user.external_id) keys.push(profileKeyOf({ external_id: user.external_id }));
  for (const fallback of fallbackIdentifiers) {
    if (fallback === 'email' && user.email) {
      const email = normalizeEmail(user.email);
      if (email) keys.push(profileKeyOf({ email }));
    }
    if (fallback === 'user_alias') {
      const alias = user.user_aliases?.find((a) => a.alias_label === aliasLabel);
      if (alias) keys.push(profileKeyOf({ user_alias: { alias_name: alias.alias_name, alias_label: aliasLabel } }));
    }
  }
  return keys;
}

const DATE_OR_TIME = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * A value as both sides can compare it: Braze may write a time back in another form than it was
 * sent (`2026-11-28T00:00:00.000Z` for `2026-11-28`), so dates and times compare as instants;
 * e-mails compare as Braze matches them (case-insensitively); everything else as its JSON.
 */
function comparable(name: string, value: unknown): string {
  if (typeof value === 'string') {
    if (DATE_OR_TIME.test(value)) {
      const at = Date.parse(value.length === 10 ? `${value}T00:00:00Z` : value);
      if (!Number.isNaN(at)) return `t:${at}`;
    }
    if (name === 'email') return JSON.stringify(value.trim().toLowerCase());
  }
  return JSON.stringify(value);
}

/** The hash of null: a CI empty cell (sent as null, which removes the attribute) or an attribute Braze holds no value for. */
const NO_VALUE = fnv1a32(JSON.stringify(null));

/**
 * Short hashes of the fields' values in the order of `names`. Null is a value of its own, so an
 * empty cell compares unequal to a value Braze holds; MISSING is only a field a CI row does not
 * carry (not sent, so not judged).
 */
export function comparableHashes(names: readonly string[], value: (name: string) => unknown): string {
  let out = '';
  for (const name of names) {
    const v = value(name);
    out += v === undefined ? MISSING : fnv1a32(comparable(name, v));
  }
  return out;
}

/**
 * A field's value in an exported user: a standard attribute at the top, a custom one under
 * custom_attributes. Braze's export omits an attribute the user has no value for, and every mapped
 * field is asked for (exportFieldsFor), so an absent one is null: known empty, not unseen.
 */
export function exportedValue(user: ExportedUser, name: string): unknown {
  if (EXPORTABLE_STANDARD_FIELDS.has(name)) return (user as Record<string, unknown>)[name] ?? null;
  return user.custom_attributes?.[name] ?? null;
}

/**
 * The mapped fields whose value Braze holds differently: carried by the CI row (a value, or null
 * for an empty cell) and different in Braze. A field the row does not carry is never cleared.
 */
export function staleFields(names: readonly string[], ours: string, braze: string): string[] {
  const stale: string[] = [];
  for (let i = 0; i < names.length; i++) {
    const mine = ours.slice(i * 8, i * 8 + 8);
    if (mine === MISSING) continue;
    const theirs = braze.slice(i * 8, i * 8 + 8);
    // A view line written before null had a hash of its own (by a run under way across a deploy) shows MISSING for no value.
    if (mine !== (theirs === MISSING ? NO_VALUE : theirs)) stale.push(names[i]);
  }
  return stale;
}

/**
 * One key of an exported user, routed to its shard: key hash, key, the segment (index in the run's
 * sources), field hashes, and whether it is the user's first key (`alt` 0) or a later one, and how
 * many keys the user has.
 */
export interface ViewLine {
  h: string;
  k: string;
  g: number;
  v: string;
  alt: 0 | 1;
  keys: number;
}

export function viewLineText(line: ViewLine): string {
  return `{"h":"${line.h}","k":${JSON.stringify(line.k)},"g":${line.g},"v":"${line.v}","alt":${line.alt},"keys":${line.keys}}`;
}

const viewLineSchema = z.strictObject({
  h: z.string().length(16),
  k: z.string().min(3),
  g: z.number().int().min(0),
  v: z.string().regex(/^[0-9a-f-]*$/),
  alt: z.union([z.literal(0), z.literal(1)]),
  keys: z.number().int().min(1),
});

export function parseViewLine(text: string, where: string): ViewLine {
  const parsed = viewLineSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${where}: not a view line (${parsed.error.issues[0]?.message})`);
  return parsed.data;
}
