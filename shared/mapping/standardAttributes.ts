import countries from 'i18n-iso-countries';
import english from 'i18n-iso-countries/langs/en.json';
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js';
import { convertCell, type JsonValue } from '../ci/dataTypes';

countries.registerLocale(english);

/**
 * Braze's user profile fields with a documented form (braze-docs user_attributes_object.md): a
 * value Braze cannot take is stored as NULL or not set at all, silently. So each is made valid here
 * where it can be — a country name or code to ISO-3166-1 alpha-2, a phone number to E.164 — and
 * otherwise dropped with the reason (a `field_dropped` line), never sent for Braze to null.
 */
export type StandardAttribute = 'country' | 'phone' | 'dob' | 'gender' | 'language' | 'time_zone';

export type Normalized = { ok: true; value: JsonValue } | { ok: false; reason: string };

const GENDERS: Record<string, string> = {
  m: 'M',
  male: 'M',
  f: 'F',
  female: 'F',
  o: 'O',
  other: 'O',
  n: 'N',
  'not applicable': 'N',
  p: 'P',
  'prefer not to say': 'P',
};
const languageNames = new Intl.DisplayNames(['en'], { type: 'language', fallback: 'none' });

export function isStandardAttribute(name: string): name is StandardAttribute {
  return ['country', 'phone', 'dob', 'gender', 'language', 'time_zone'].includes(name);
}

/** What is needed beside the value: the region a phone number without a country code is read in. */
export interface StandardAttributeContext {
  phoneCountry?: string;
}

/**
 * The value Braze should get for one of its profile fields, or why there is none. Null (an empty
 * cell) passes: it clears the field.
 */
export function normalizeStandardAttribute(name: StandardAttribute, value: JsonValue, context: StandardAttributeContext = {}): Normalized {
  if (value === null) return { ok: true, value };
  const text = typeof value === 'string' ? value.trim() : String(value);
  switch (name) {
    case 'country': {
      // Codes first (DE, DEU), then English names (Germany, United States of America, USA).
      const code = countries.isValid(text) ? countries.toAlpha2(text) : countries.getAlpha2Code(text, 'en');
      return code
        ? { ok: true, value: code.toUpperCase() }
        : { ok: false, reason: 'not a country name or ISO-3166-1 code (Braze stores NULL for anything but alpha-2)' };
    }
    case 'phone': {
      const parsed = parsePhoneNumberFromString(text, context.phoneCountry as CountryCode | undefined);
      if (parsed?.isValid()) return { ok: true, value: parsed.number };
      return {
        ok: false,
        reason: context.phoneCountry
          ? `not a valid phone number (read in ${context.phoneCountry} when it has no country code)`
          : "not a valid phone number in international form (+<country code>…; or set the destination's phoneCountry)",
      };
    }
    case 'dob': {
      const day = convertCell(text, 'date');
      return day.ok ? day : { ok: false, reason: 'not a date of birth (Braze takes YYYY-MM-DD)' };
    }
    case 'gender': {
      const letter = GENDERS[text.toLowerCase()];
      return letter ? { ok: true, value: letter } : { ok: false, reason: 'not a gender Braze knows (M, F, O, N, P)' };
    }
    case 'language': {
      // ISO-639-1 as Braze requires (and the 3-letter codes its list also has: fil, haw, …); a locale
      // (en-US, pt_BR) gives its language; deprecated codes take their current form (iw → he), and
      // Norwegian is nb, as Braze lists it.
      let code: string;
      try {
        code = Intl.getCanonicalLocales(text.replace(/_/g, '-'))[0].split('-')[0].toLowerCase();
      } catch {
        return { ok: false, reason: 'not an ISO-639-1 language code' };
      }
      if (code === 'no') code = 'nb';
      return /^[a-z]{2,3}$/.test(code) && languageNames.of(code) !== undefined
        ? { ok: true, value: code }
        : { ok: false, reason: 'not an ISO-639-1 language code' };
    }
    case 'time_zone': {
      // "Only valid time zone values will be set": an IANA name the platform knows, sent as written
      // (the platform's own name may be an older alias: Asia/Calcutta for Asia/Kolkata), or a name
      // of the form Braze's example shows ("Eastern Time (US & Canada)"), which Braze judges itself.
      if (/^[A-Z][A-Za-z.'&-]*( [A-Za-z.'&-]+)* \([A-Za-z .&'-]+\)$/.test(text)) return { ok: true, value: text };
      try {
        new Intl.DateTimeFormat('en', { timeZone: text });
        return { ok: true, value: text };
      } catch {
        return { ok: false, reason: 'not an IANA time zone (e.g. America/New_York)' };
      }
    }
  }
}

/**
 * A nested custom attribute without the nulls inside it: one null anywhere makes Braze drop every
 * nested attribute update of the request (post_user_track.md), and a null member means no value.
 */
export function withoutInnerNulls(value: JsonValue): JsonValue {
  if (Array.isArray(value)) return value.filter((v) => v !== null).map(withoutInnerNulls);
  if (value && typeof value === 'object') {
    const kept: Record<string, JsonValue> = {};
    for (const [key, member] of Object.entries(value)) if (member !== null) kept[key] = withoutInnerNulls(member);
    return kept;
  }
  return value;
}
