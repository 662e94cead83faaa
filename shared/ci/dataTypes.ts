import type { CdmDataType } from './modelJson';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export type Conversion = { ok: true; value: JsonValue } | { ok: false; reason: string };

const CANONICAL_UTC = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$/;
/** An ISO 8601 date-time without a zone: `2024-02-03T04:05:06`, `2024-02-03 04:05`, with optional fractions. */
const ISO_WITHOUT_ZONE = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)$/;
/**
 * Names a zone or an offset: then the text says which instant it is. An offset counts only after a
 * time (05-16-2019 has none), and a zone may be followed by its name (JavaScript's own
 * `… GMT+0200 (Central European Summer Time)`).
 */
const HAS_ZONE = /(\dZ|\d:\d{2}(:\d{2}(\.\d+)?)?\s*[+-]\d{2}:?\d{2}|\b(GMT|UTC)([+-]\d{2}:?\d{2})?)\s*(\([^)]*\))?\s*$/i;
/** Braze refuses nested objects over 50 KB; deeper nesting than this serves no segment filter and risks the stack. */
export const JSON_MAX_CHARS = 50 * 1024;
export const JSON_MAX_DEPTH = 32;

/** How deeply a JSON text nests, counted without parsing it (strings skipped), so a hostile cell cannot exhaust the stack. */
function jsonDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i += 1;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) deepest = Math.max(deepest, ++depth);
    else if (c === 0x5d || c === 0x7d) depth -= 1;
  }
  return deepest;
}
const TIME_OF_DAY = /^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,7})?)?$/;
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];

/**
 * Whether the day a text names exists: 2024-02-30 and 2024-04-31 do not (the platform would roll
 * them into March and May). Read from the forms CDM writers use — ISO (YYYY-MM-DD…), US
 * (M/D/YYYY…) and month names (Thu May 16 2019) — and true for a form it does not know.
 */
function validCalendarDate(text: string): boolean {
  let year: number, month: number, day: number;
  // A two-digit year (1/2/45) is a guess the platform would make for us (2045?): not a date.
  if (/^\d{1,2}[-/]\d{1,2}[-/]\d{2}(?!\d)/.test(text)) return false;
  const iso = /^(\d{4})[-/](\d{2})[-/](\d{2})/.exec(text);
  const us = /^(\d{1,2})[-/](\d{1,2})[-/](\d{4})\b/.exec(text);
  const named = /\b([a-z]{3})[a-z]*\.?\s+(\d{1,2}),?\s+(\d{4})\b/i.exec(text);
  const dayFirst = /\b(\d{1,2})\s+([a-z]{3})[a-z]*\.?,?\s+(\d{4})\b/i.exec(text);
  if (iso) [year, month, day] = [Number(iso[1]), Number(iso[2]), Number(iso[3])];
  else if (us) [year, month, day] = [Number(us[3]), Number(us[1]), Number(us[2])];
  else if (named && MONTHS.includes(named[1].toLowerCase()))
    [year, month, day] = [Number(named[3]), MONTHS.indexOf(named[1].toLowerCase()) + 1, Number(named[2])];
  else if (dayFirst && MONTHS.includes(dayFirst[2].toLowerCase()))
    [year, month, day] = [Number(dayFirst[3]), MONTHS.indexOf(dayFirst[2].toLowerCase()) + 1, Number(dayFirst[1])];
  else return true;
  return month >= 1 && month <= 12 && day >= 1 && day <= new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/**
 * The instant a date or date-time text names, as milliseconds; undefined when it names none (or a
 * day that does not exist). A text without a zone is UTC, as CI writes it, on any machine: other
 * zone-less forms than ISO are read by saying so (` UTC`), since the platform would read them as
 * local time, and correcting by the local offset afterwards is wrong in a daylight-saving gap.
 */
function instantOf(text: string): number | undefined {
  if (!validCalendarDate(text)) return undefined;
  const iso = ISO_WITHOUT_ZONE.exec(text);
  if (iso) return Date.parse(`${iso[1]}T${iso[2]}Z`);
  const ms = HAS_ZONE.test(text) || /^\d{4}-\d{2}-\d{2}$/.test(text) ? Date.parse(text) : Date.parse(`${text} UTC`);
  return Number.isNaN(ms) ? undefined : ms;
}

const TRUE_WORDS = new Set(['true', '1', 'yes', 'y']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'n']);

/**
 * A CSV cell → the JSON value Braze should get, by the column's CDM dataType. An empty cell is
 * null: CI writes a full snapshot, so an empty value means the profile has none, and Braze removes
 * an attribute set to null.
 */
export function convertCell(raw: string, dataType: CdmDataType): Conversion {
  if (raw === '') return { ok: true, value: null };
  switch (dataType) {
    case 'string':
    case 'GUID':
      return { ok: true, value: raw };
    case 'int64': {
      if (!/^[+-]?\d+$/.test(raw.trim())) return { ok: false, reason: `not an integer` };
      const n = Number(raw);
      if (!Number.isSafeInteger(n)) return { ok: false, reason: `integer beyond ±2^53 cannot be sent exactly` };
      return { ok: true, value: n };
    }
    case 'double':
    case 'decimal': {
      const n = Number(raw.trim());
      if (raw.trim() === '' || !Number.isFinite(n)) return { ok: false, reason: `not a number` };
      return { ok: true, value: n };
    }
    case 'boolean': {
      const word = raw.trim().toLowerCase();
      if (TRUE_WORDS.has(word)) return { ok: true, value: true };
      if (FALSE_WORDS.has(word)) return { ok: true, value: false };
      return { ok: false, reason: `not a boolean` };
    }
    case 'dateTime':
    case 'dateTimeOffset': {
      // CI writes UTC as 2024-02-03T04:05:06Z; its canonical form needs no Date round trip.
      if (CANONICAL_UTC.test(raw) && validCalendarDate(raw)) return { ok: true, value: `${raw.slice(0, 19)}.000Z` };
      const ms = instantOf(raw.trim());
      return ms === undefined ? { ok: false, reason: `not a date/time` } : { ok: true, value: new Date(ms).toISOString() };
    }
    case 'date': {
      // A calendar day, sent as YYYY-MM-DD: a date-time's day in UTC, a date-only form as written.
      const ms = instantOf(raw.trim());
      return ms === undefined ? { ok: false, reason: `not a date` } : { ok: true, value: new Date(ms).toISOString().slice(0, 10) };
    }
    case 'time': {
      const text = raw.trim();
      return TIME_OF_DAY.test(text) ? { ok: true, value: text } : { ok: false, reason: `not a time of day (HH:MM[:SS[.fff]])` };
    }
    case 'JSON': {
      if (raw.length > JSON_MAX_CHARS) return { ok: false, reason: `JSON value longer than ${JSON_MAX_CHARS / 1024} KB` };
      if (jsonDepth(raw) > JSON_MAX_DEPTH) return { ok: false, reason: `JSON value nested deeper than ${JSON_MAX_DEPTH} levels` };
      try {
        return { ok: true, value: JSON.parse(raw) as JsonValue };
      } catch {
        return { ok: false, reason: `not valid JSON` };
      }
    }
  }
}
