import type { DestinationConfig } from '../config/syncConfig';
import type { SegmentRefresh } from '../ci/exportRefresh';
import type { PartitionColumns } from '../ci/partitionReader';
import { md5Hex } from '../state/profileIndex';

/**
 * What a map step hands a shard for one row: the profile's key hash, its segment, where it came
 * from, a fingerprint of its raw values, and those values (only the columns the mapping reads, in
 * a fixed order). The shard maps the values only when the fingerprint differs from the state.
 */
export interface MapLine {
  /** Profile key hash. */
  h: string;
  /** Segment index in the run's sources. */
  g: number;
  /** Partition index, and 1-based data row within it. */
  p: number;
  r: number;
  /** Physical line of the file the row starts on; 0 when not known. */
  l?: number;
  /** Fingerprint of the mapping and the raw values. */
  x: string;
  /** The canonical columns' raw values. */
  v: string[];
}

/** A map line, its values already serialized (the fingerprint was taken over the same text). */
export function mapLineText(h: string, g: number, p: number, r: number, l: number, x: string, valuesJson: string): string {
  return `{"h":"${h}","g":${g},"p":${p},"r":${r},"l":${l},"x":"${x}","v":${valuesJson}}`;
}

/**
 * A hint a map step leaves in the shard of a row's e-mail key when the row is keyed by external_id:
 * if the state holds a profile keyed by that e-mail, it has since got this customer ID (and is in
 * this segment). Its prefix tells it from a map line.
 */
export interface IdentityHint {
  /** Hash of the e-mail key. */
  e: string;
  /** Segment index in the run's sources. */
  g: number;
  /** The external_id the row has now. */
  i: string;
}

export const IDENTITY_HINT_PREFIX = '{"e":"';

export function identityHintText(emailKeyHash: string, g: number, externalIdJson: string): string {
  return `${IDENTITY_HINT_PREFIX}${emailKeyHash}","g":${g},"i":${externalIdJson}}`;
}

export function parseIdentityHint(text: string, where: string): IdentityHint {
  const hint = JSON.parse(text) as IdentityHint;
  if (typeof hint.e !== 'string' || hint.e.length !== 16 || typeof hint.g !== 'number' || typeof hint.i !== 'string') {
    throw new Error(`${where}: not an identity hint`);
  }
  return hint;
}

export function parseMapLine(text: string, where: string): MapLine {
  const line = JSON.parse(text) as MapLine;
  if (
    typeof line.h !== 'string' ||
    typeof line.g !== 'number' ||
    typeof line.p !== 'number' ||
    typeof line.r !== 'number' ||
    (line.l !== undefined && typeof line.l !== 'number') ||
    typeof line.x !== 'string' ||
    !Array.isArray(line.v)
  ) {
    throw new Error(`${where}: not a map line`);
  }
  return line;
}

/**
 * A map line's key hash and fingerprint without parsing it: a diff step reads every row but
 * parses only the one row per profile it may have to map. The line's layout is fixed by
 * mapLineText; anything else is not a map line.
 */
export function mapLineHash(text: string, where: string): string {
  if (!text.startsWith('{"h":"') || text.charCodeAt(22) !== 34 /* " */) throw new Error(`${where}: not a map line`);
  return text.slice(6, 22);
}

export function mapLineFingerprint(text: string, where: string): string {
  const at = text.indexOf('"x":"');
  if (at < 0 || text.charCodeAt(at + 21) !== 34) throw new Error(`${where}: not a map line`);
  return text.slice(at + 5, at + 21);
}

/** What a diff step reads of a profile's first map line without decoding it, past its key hash: where its row is, its fingerprint. */
export interface MapLineHead {
  p: number;
  r: number;
  /** 0 when the line does not say. */
  l: number;
  x: string;
}

const QUOTE = 34;
const COMMA = 44;

/**
 * A map line's head read from the bytes of a map output, its layout as mapLineText writes it
 * (`"l"` optional), after its key hash (read, and the line's start checked, by readMapLineHash).
 * Strings are copied out of the buffer, so a profile kept by its hash holds neither the buffer nor
 * a text of the whole output alive.
 */
export function readMapLineHead(buf: Buffer, start: number, end: number, where: string): MapLineHead {
  const fail = (): never => {
    throw new Error(`${where}: not a map line`);
  };
  let at = start + 23;
  const number = (key: string): number => {
    if (!startsWith(buf, at, key)) fail();
    at += key.length;
    let value = 0;
    const from = at;
    for (let c = buf[at]; c >= 48 && c <= 57 && at < end; c = buf[++at]) value = value * 10 + (c - 48);
    if (at === from || buf[at] !== COMMA) fail();
    return value;
  };
  number(',"g":');
  const p = number(',"p":');
  const r = number(',"r":');
  const l = startsWith(buf, at, ',"l":') ? number(',"l":') : 0;
  if (!startsWith(buf, at, ',"x":"') || buf[at + 22] !== QUOTE || at + 23 > end) fail();
  const x = buf.toString('latin1', at + 6, at + 22);
  return { p, r, l, x };
}

/** A map line's key hash, copied out of the buffer (see readMapLineHead). */
export function readMapLineHash(buf: Buffer, start: number, where: string): string {
  if (!startsWith(buf, start, '{"h":"') || buf[start + 22] !== QUOTE) throw new Error(`${where}: not a map line`);
  return buf.toString('latin1', start + 6, start + 22);
}

export function isIdentityHintAt(buf: Buffer, start: number): boolean {
  return startsWith(buf, start, IDENTITY_HINT_PREFIX);
}

function startsWith(buf: Buffer, at: number, ascii: string): boolean {
  for (let i = 0; i < ascii.length; i++) if (buf[at + i] !== ascii.charCodeAt(i)) return false;
  return true;
}

/** The columns a destination's mapping reads, once each, in a fixed order: identifiers first, then fields, then subscription states. */
export function canonicalColumns(destination: DestinationConfig): string[] {
  const columns = [
    destination.matching.customerIdColumn,
    destination.matching.emailColumn,
    ...Object.keys(destination.fields),
    ...destination.subscriptions.map((entry) => entry.column),
  ].filter((c): c is string => c !== undefined);
  return [...new Set(columns)];
}

export function canonicalPartitionColumns(destination: DestinationConfig): PartitionColumns {
  const columns = canonicalColumns(destination);
  return { indexOf: new Map(columns.map((c, i) => [c, i])), count: columns.length };
}

/**
 * The part of a fingerprint that is not the values: the mapping (identifier rules, field names,
 * data types). A change of mapping changes every fingerprint once, so those profiles are sent again.
 */
export function mappingSeed(destination: DestinationConfig, segment: SegmentRefresh): string {
  const types = canonicalColumns(destination).map((c) => segment.attributes.find((a) => a.name === c)?.dataType ?? 'string');
  // How values are made valid for Braze is part of the mapping: a phoneCountry set later re-sends the
  // phones it makes valid (left out while unset, so seeds written before it existed stay the same).
  const parts: unknown[] = [destination.matching, destination.fields, types];
  if (destination.phoneCountry) parts.push({ phoneCountry: destination.phoneCountry });
  if (destination.subscriptions.length) parts.push({ subscriptions: destination.subscriptions });
  return md5Hex(JSON.stringify(parts)).slice(0, 16);
}

export function rawFingerprint(seed: string, valuesJson: string): string {
  return md5Hex(`${seed}\u0001${valuesJson}`).slice(0, 16);
}
