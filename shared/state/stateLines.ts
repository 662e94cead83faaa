import type { ContainerClient } from '@azure/storage-blob';
import { isStateRecord, previousShardBlobs, readPreviousShard, shardOfHash, stateRecordSchema, type PreviousState, type StateRecord } from './deliveredState';

const QUOTE = 34;
const BACKSLASH = 92;
const COMMA = 44;
const CLOSE_ARRAY = 93;
const CLOSE_OBJECT = 125;
const LF = 10;
const CR = 13;
/** Where a line's key starts, after `{"h":"` + 16 + `","k":"`. */
const KEY_AT = 29;

/**
 * A delivered-state record read in place from its line's bytes: its key hash and fingerprint at
 * once, everything else when asked. A diff step decides most profiles on the fingerprint alone,
 * and writes the line of a profile whose state stays as it was back as it was read (`text`), so
 * most lines of a refresh are never parsed. Asked for its memberships, hashes or consents, the
 * line is parsed and checked whole, as any record is.
 */
export class StateLine implements StateRecord {
  private record: StateRecord | undefined;

  constructor(
    readonly h: string,
    readonly f: string,
    private readonly bytes: Buffer,
    private readonly start: number,
    private readonly end: number,
    /** The key's closing quote; escaped: the key has escapes, and is read by parsing the line. */
    private readonly keyEnd: number,
    private readonly keyEscaped: boolean,
    private readonly membersStart: number,
    private readonly membersEnd: number,
    private readonly blobName: string,
    private readonly lineNumber: number,
  ) {}

  get k(): string {
    if (this.record || this.keyEscaped) return this.parsed().k;
    return this.bytes.toString('utf8', this.start + KEY_AT, this.keyEnd);
  }

  get m(): string[] {
    return this.parsed().m;
  }

  get a(): string | undefined {
    return this.parsed().a;
  }

  get c(): Record<string, string> | undefined {
    return this.parsed().c;
  }

  /** Whether the key is an e-mail (`e:`), read from the bytes. */
  get keyedByEmail(): boolean {
    return this.bytes[this.start + KEY_AT] === 101 /* e */ && this.bytes[this.start + KEY_AT + 1] === 58; /* : */
  }

  /** The memberships as the line spells them (a JSON array): a shard's lines share a handful. */
  get membersText(): string {
    return this.bytes.toString('utf8', this.membersStart, this.membersEnd);
  }

  /** The line as it was read. */
  get text(): string {
    return this.bytes.toString('utf8', this.start, this.end);
  }

  private parsed(): StateRecord {
    this.record ??= parseStateLine(this.text, this.blobName, this.lineNumber);
    return this.record;
  }
}

/** A state line parsed and checked whole: the hot-path shape check first, the schema for a precise message. */
export function parseStateLine(text: string, blobName: string, lineNumber: number): StateRecord {
  const value: unknown = JSON.parse(text);
  if (isStateRecord(value)) return value;
  const parsed = stateRecordSchema.safeParse(value);
  if (!parsed.success) throw new Error(`${blobName} line ${lineNumber} is not a valid record: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/**
 * A line laid out as stateLine writes it (`h`, `k`, `m`, `f`, then `a` and `c` if any), read in
 * place; undefined for any other layout, which the caller parses whole.
 */
export function stateLineAt(bytes: Buffer, start: number, end: number, blobName: string, lineNumber: number): StateLine | undefined {
  if (!asciiAt(bytes, start, '{"h":"') || !asciiAt(bytes, start + 22, '","k":"') || bytes[end - 1] !== CLOSE_OBJECT) return undefined;
  let at = start + KEY_AT;
  let keyEscaped = false;
  for (;;) {
    if (at >= end) return undefined;
    const c = bytes[at];
    if (c === QUOTE) break;
    if (c === BACKSLASH) {
      keyEscaped = true;
      at += 1;
    }
    at += 1;
  }
  const keyEnd = at;
  if (!asciiAt(bytes, keyEnd, '","m":[')) return undefined;
  const membersStart = keyEnd + 6;
  at = membersStart + 1;
  if (bytes[at] !== CLOSE_ARRAY) {
    // JSON strings, comma-separated.
    for (;;) {
      if (bytes[at] !== QUOTE) return undefined;
      for (at += 1; ; at += 1) {
        if (at >= end) return undefined;
        const c = bytes[at];
        if (c === QUOTE) break;
        if (c === BACKSLASH) at += 1;
      }
      at += 1;
      if (bytes[at] === COMMA) {
        at += 1;
        continue;
      }
      if (bytes[at] === CLOSE_ARRAY) break;
      return undefined;
    }
  }
  const membersEnd = at + 1;
  if (!asciiAt(bytes, membersEnd, ',"f":"')) return undefined;
  const fingerprintStart = membersEnd + 6;
  let fingerprintEnd = fingerprintStart;
  // A fingerprint is ASCII without escapes (hex, or a word); anything else is read the slow way.
  for (let c = bytes[fingerprintEnd]; c !== QUOTE; c = bytes[++fingerprintEnd]) if (fingerprintEnd >= end || c === BACKSLASH || c >= 0x80) return undefined;
  const next = bytes[fingerprintEnd + 1];
  if (next !== COMMA && !(next === CLOSE_OBJECT && fingerprintEnd + 2 === end)) return undefined;
  return new StateLine(
    bytes.toString('latin1', start + 6, start + 22),
    bytes.toString('latin1', fingerprintStart, fingerprintEnd),
    bytes,
    start,
    end,
    keyEnd,
    keyEscaped,
    membersStart,
    membersEnd,
    blobName,
    lineNumber,
  );
}

/**
 * The previous state's records of `shard` of `shards`, for a diff step. A format-2 shard blob is
 * read whole into one buffer (a shard is ~100k profiles at most: ~13 MB, less than its records
 * parsed), and its lines are read in place (StateLine). A format-1 state, one blob of every
 * profile, is streamed and parsed as before.
 */
export async function readPreviousShardLines(
  container: ContainerClient,
  previous: PreviousState,
  shard: number,
  shards: number,
  visit: (record: StateRecord) => void,
): Promise<void> {
  if (previous.format !== 2) {
    for await (const record of readPreviousShard(container, previous, shard, shards)) visit(record);
    return;
  }
  for (const blobName of previousShardBlobs(previous, shard, shards)) {
    const bytes = await container.getBlobClient(blobName).downloadToBuffer();
    let lineNumber = 0;
    for (let start = 0; start < bytes.length;) {
      let end = bytes.indexOf(LF, start);
      if (end < 0) end = bytes.length;
      const at = start;
      start = end + 1;
      lineNumber += 1;
      if (end > at && bytes[end - 1] === CR) end -= 1;
      if (end === at) continue;
      const record = stateLineAt(bytes, at, end, blobName, lineNumber) ?? parseStateLine(bytes.toString('utf8', at, end), blobName, lineNumber);
      if (shards === 1 || shardOfHash(record.h, shards) === shard) visit(record);
    }
  }
}

function asciiAt(bytes: Buffer, at: number, ascii: string): boolean {
  for (let i = 0; i < ascii.length; i++) if (bytes[at + i] !== ascii.charCodeAt(i)) return false;
  return true;
}
