import type { CdmDataType } from './modelJson';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export type Conversion = { ok: true; value: JsonValue } | { ok: false; reason: string };

const CANONICAL_UTC = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$/;
/** An ISO 8601 date-time without a zone: `2024-02-03T04:05:06`, `2024-02-03 04:05`, with optional fractions. */
const ISO_WITHOUT_ZONE = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)$/;
/** Names a zone or an offset: then the text says which instant it is. */
const HAS_ZONE = /(Z|[+-]\d{2}:?\d{2}|\b(GMT|UTC)\b)\s*$/i;
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
      if (CANONICAL_UTC.test(raw)) return { ok: true, value: `${raw.slice(0, 19)}.000Z` };
      const text = raw.trim();
      // A time without a zone is UTC in CI exports, whatever time zone this machine is set to.
      const iso = ISO_WITHOUT_ZONE.exec(text);
      let ms = iso ? Date.parse(`${iso[1]}T${iso[2]}Z`) : Date.parse(text);
      if (Number.isNaN(ms)) return { ok: false, reason: `not a date/time` };
      // Other zone-less forms are parsed by the platform as local time: read them as UTC instead.
      if (!iso && !HAS_ZONE.test(text) && /\d:\d/.test(text)) ms -= new Date(ms).getTimezoneOffset() * 60_000;
      return { ok: true, value: new Date(ms).toISOString() };
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
