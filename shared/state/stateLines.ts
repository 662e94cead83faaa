import type { Readable } from 'node:stream';
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
  // Every read below stays before `end`: the bytes after a line are another line's, or a reused buffer's.
  if (end - start < KEY_AT + 1 || !asciiAt(bytes, start, '{"h":"') || !asciiAt(bytes, start + 22, '","k":"') || bytes[end - 1] !== CLOSE_OBJECT)
    return undefined;
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
  if (keyEnd + 7 > end || !asciiAt(bytes, keyEnd, '","m":[')) return undefined;
  const membersStart = keyEnd + 6;
  at = membersStart + 1;
  if (at < end && bytes[at] !== CLOSE_ARRAY) {
    // JSON strings, comma-separated.
    for (;;) {
      if (at >= end || bytes[at] !== QUOTE) return undefined;
      for (at += 1; ; at += 1) {
        if (at >= end) return undefined;
        const c = bytes[at];
        if (c === QUOTE) break;
        if (c === BACKSLASH) at += 1;
      }
      at += 1;
      if (at >= end) return undefined;
      if (bytes[at] === COMMA) {
        at += 1;
        continue;
      }
      if (bytes[at] === CLOSE_ARRAY) break;
      return undefined;
    }
  }
  const membersEnd = at + 1;
  if (membersEnd + 6 > end || !asciiAt(bytes, membersEnd, ',"f":"')) return undefined;
  const fingerprintStart = membersEnd + 6;
  let fingerprintEnd = fingerprintStart;
  // A fingerprint is ASCII without escapes (hex, or a word); anything else is read the slow way.
  for (;;) {
    if (fingerprintEnd >= end) return undefined;
    const c = bytes[fingerprintEnd];
    if (c === QUOTE) break;
    if (c === BACKSLASH || c >= 0x80) return undefined;
    fingerprintEnd += 1;
  }
  // Then `a` and `c`, checked as the schema checks them: a line written back unread must be a valid record.
  at = fingerprintEnd + 1;
  if (asciiAt(bytes, at, ',"a":"')) {
    for (at += 6; at < end && bytes[at] !== QUOTE; at += 1) if (!isHashByte(bytes[at])) return undefined;
    at += 1;
  }
  if (asciiAt(bytes, at, ',"c":') && at + 5 < end - 1) {
    let consents: unknown;
    try {
      consents = JSON.parse(bytes.toString('utf8', at + 5, end - 1));
    } catch {
      return undefined;
    }
    if (typeof consents !== 'object' || consents === null || Array.isArray(consents) || !Object.values(consents).every((v) => typeof v === 'string'))
      return undefined;
    at = end - 1;
  }
  if (at !== end - 1) return undefined;
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
 * The buffers a diff step reads its previous state's shard into, reused from step to step. A
 * shard's buffer must live as long as its step (its records are read in place), and a freed one
 * would wait for a full collection (array buffers outlive the young generation): a worker's steps
 * would each leave one behind until then.
 */
export class StateBuffers {
  private static readonly spare: Buffer[] = [];
  private static readonly SPARE_BUFFERS = 2;
  private readonly taken: Buffer[] = [];

  /** A buffer of at least `bytes`, this step's until release(). */
  take(bytes: number): Buffer {
    const spare = StateBuffers.spare;
    const fits = spare.findIndex((buffer) => buffer.length >= bytes);
    // Room to grow: the next refresh's shard is a little larger as often as not.
    const buffer = fits >= 0 ? spare.splice(fits, 1)[0] : Buffer.allocUnsafeSlow(Math.max(64 * 1024, Math.ceil(bytes * 1.25)));
    this.taken.push(buffer);
    return buffer;
  }

  /** The step is done with its records: its buffers go to the next step. */
  release(): void {
    const spare = StateBuffers.spare;
    spare.push(...this.taken.splice(0));
    spare.sort((a, b) => b.length - a.length);
    spare.length = Math.min(spare.length, StateBuffers.SPARE_BUFFERS);
  }
}

/**
 * The previous state's records of `shard` of `shards`, for a diff step. A format-2 shard blob is
 * read whole into one buffer (a shard is ~100k profiles at most: ~16 MB, no more than its records
 * parsed), and its lines are read in place (StateLine): the records are valid until the buffers
 * are released. A format-1 state, one blob of every profile, is streamed, each line parsed whole.
 */
export async function readPreviousShardLines(
  container: ContainerClient,
  previous: PreviousState,
  shard: number,
  shards: number,
  buffers: StateBuffers,
  visit: (record: StateRecord) => void,
): Promise<void> {
  if (previous.format !== 2) {
    for await (const record of readPreviousShard(container, previous, shard, shards)) visit(record);
    return;
  }
  for (const blobName of previousShardBlobs(previous, shard, shards)) {
    const download = await container.getBlobClient(blobName).download();
    const size = download.contentLength ?? 0;
    const bytes = buffers.take(size);
    let length = 0;
    for await (const chunk of download.readableStreamBody as Readable) {
      const part = chunk as Buffer;
      if (length + part.length > size) throw new Error(`${blobName}: more bytes than the ${size} announced`);
      part.copy(bytes, length);
      length += part.length;
    }
    if (length !== size) throw new Error(`${blobName}: ${length} of ${size} bytes read`);
    let lineNumber = 0;
    for (let start = 0; start < length;) {
      let end = bytes.indexOf(LF, start);
      if (end < 0 || end > length) end = length;
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

/** What a field-hash list holds: lower-case hex and hyphens. */
function isHashByte(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || c === 45;
}

function asciiAt(bytes: Buffer, at: number, ascii: string): boolean {
  for (let i = 0; i < ascii.length; i++) if (bytes[at + i] !== ascii.charCodeAt(i)) return false;
  return true;
}
