import type { CdmDataType } from './modelJson';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export type Conversion = { ok: true; value: JsonValue } | { ok: false; reason: string };

const CANONICAL_UTC = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$/;
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
      const ms = Date.parse(raw.trim());
      if (Number.isNaN(ms)) return { ok: false, reason: `not a date/time` };
      // A time without offset is UTC in CI exports; Braze reads ISO 8601 strings as time attributes.
      return { ok: true, value: new Date(ms).toISOString() };
    }
    case 'JSON': {
      try {
        return { ok: true, value: JSON.parse(raw) as JsonValue };
      } catch {
        return { ok: false, reason: `not valid JSON` };
      }
    }
  }
}
