import { brazeChannelField } from '../brazeApi';
import type { DestinationConfig } from '../config/syncConfig';

/** The attributes a destination's mapped profiles carry besides memberships, in a fixed order. */
export function mappedFieldNames(destination: DestinationConfig): string[] {
  const subscriptions = destination.subscriptions.map((entry) => (entry.channel ? brazeChannelField(entry.channel) : 'subscription_groups'));
  return [...new Set([...(destination.matching.emailColumn ? ['email'] : []), ...Object.values(destination.fields), ...subscriptions])].sort();
}

/** A field the profile does not carry, in a field-hash string. */
export const MISSING = '--------';

/**
 * A short hash of each mapped field's value, in the order of `names`, so a later run can tell
 * which attributes of a changed profile change (the row fingerprint only says that one did).
 */
export function fieldHashes(names: readonly string[], fields: Record<string, unknown>): string {
  let out = '';
  for (const name of names) out += name in fields ? valueHash(fields[name]) : MISSING;
  return out;
}

/** fnv1a32 of the value's JSON text, without writing the text for the common cases (a plain string, a number). */
function valueHash(value: unknown): string {
  if (typeof value === 'number' && Number.isFinite(value)) return fnv1a32(String(value));
  if (typeof value !== 'string') return fnv1a32(JSON.stringify(value));
  const QUOTE = 0x22;
  let hash = Math.imul(0x811c9dc5 ^ QUOTE, 0x01000193);
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    // What JSON.stringify would escape (control characters, quote, backslash, any surrogate to be safe): hash its text instead.
    if (code < 0x20 || code === QUOTE || code === 0x5c || (code >= 0xd800 && code <= 0xdfff)) return fnv1a32(JSON.stringify(value));
    hash = Math.imul(hash ^ code, 0x01000193);
  }
  hash = Math.imul(hash ^ QUOTE, 0x01000193);
  return (hash >>> 0).toString(16).padStart(8, '0');
}

/**
 * FNV-1a over UTF-16 code units, as 8 hex digits: computed for every field of every mapped profile,
 * where a crypto hash's per-call cost shows. It only tells a preview which attribute changed (a
 * rare collision undercounts one), never what is sent.
 */
export function fnv1a32(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0).toString(16).padStart(8, '0');
}

/**
 * The attributes whose values differ between two field-hash strings of the same names; every
 * present one when there is nothing to compare with (a new profile, or a state written before
 * field hashes were kept).
 */
export function changedAttributes(names: readonly string[], now: string, before: string | undefined): string[] {
  const changed: string[] = [];
  const comparable = before !== undefined && before.length === now.length;
  for (let i = 0; i < names.length; i++) {
    const value = now.slice(i * 8, i * 8 + 8);
    if (comparable ? value !== before.slice(i * 8, i * 8 + 8) : value !== MISSING) changed.push(names[i]);
  }
  return changed;
}
