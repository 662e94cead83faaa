import type { DestinationConfig } from '../config/syncConfig';
import type { SegmentRefresh } from '../ci/exportRefresh';

/** A GUID in any of .NET's text forms: hyphenated or not, in braces or parentheses, any case. */
const GUID = /^(?:\{([0-9a-f-]{32,36})\}|\(([0-9a-f-]{32,36})\)|([0-9a-f-]{32,36}))$/i;
const DIGITS = /^([0-9a-f]{8})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{12})$/i;

/**
 * One spelling per GUID: lower case, hyphenated, no braces — so `{0B5E…}` and `0b5e…` are one
 * Braze user. Anything that is not a GUID is left as written (undefined).
 */
export function canonicalGuid(raw: string): string | undefined {
  if (isCanonicalGuid(raw)) return raw;
  const inner = GUID.exec(raw);
  if (!inner) return undefined;
  const digits = DIGITS.exec(inner[1] ?? inner[2] ?? inner[3]);
  if (!digits) return undefined;
  return digits.slice(1).join('-').toLowerCase();
}

/** The spelling canonicalGuid writes, checked without a regular expression (every row of a refresh comes here). */
function isCanonicalGuid(text: string): boolean {
  if (text.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = text.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 45 /* - */) return false;
    } else if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/**
 * Whether a run writes GUID customer IDs in their canonical spelling: as the destination says
 * (`matching.normalizeGuids`), else when the customer-ID column is a GUID in the export's model.
 */
export function normalizesGuids(destination: DestinationConfig, segments: Pick<SegmentRefresh, 'attributes'>[]): boolean {
  if (destination.matching.normalizeGuids !== undefined) return destination.matching.normalizeGuids;
  const column = destination.matching.customerIdColumn;
  if (!column || !destination.matching.customerIdIsExternalId) return false;
  return segments.some((segment) => segment.attributes.some((attribute) => attribute.name === column && attribute.dataType === 'GUID'));
}

/**
 * The profile key a state record's key becomes when GUIDs are written canonically: an external_id
 * key of a GUID spelled otherwise; undefined when the key stays as it is.
 */
export function canonicalKey(key: string): string | undefined {
  if (key.charCodeAt(0) !== 120 /* x */ || key.charCodeAt(1) !== 58 /* : */) return undefined;
  const id = key.slice(2);
  const canonical = canonicalGuid(id);
  return canonical !== undefined && canonical !== id ? `x:${canonical}` : undefined;
}
