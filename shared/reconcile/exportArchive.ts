import { createReadStream, createWriteStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { pipeline as pipelineCallback, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import axios from 'axios';
import yauzl from 'yauzl';
import { BrazeRetryableError, InvalidInputError } from '../errors';

/**
 * A segment export's archive: fetched from the pre-signed URL Braze answered with (no API key goes
 * there), kept in a temporary file — a zip can only be read from its end — and read back as NDJSON
 * lines, entry by entry, never whole in memory. Braze writes a zip with one file per ~5,000 users;
 * a gzip (concatenated members) and plain NDJSON are read too.
 *
 * The archive is input from outside: a few hundred KB of deflate can hold a line of hundreds of MB.
 * Every dimension of it is bounded, and a breach is an InvalidInputError (the reconcile fails with
 * it) raised before the breach costs memory — never a crash that the retry would repeat forever.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/**
 * A user's line is a few KB: the identifiers, the standard fields asked for and the custom
 * attributes. Braze caps a string attribute at 255 characters and an object attribute at tens of
 * KB, so even a user with many large attributes stays far below this. A line is held whole while
 * it is parsed (as a string, up to twice its bytes), so this is also what one line may cost the heap.
 */
export const MAX_LINE_BYTES = 4 * MiB;

/**
 * All of an archive's files, inflated. Braze says a segment of 20M users takes about an hour to
 * export; at ~1 KiB a line that is ~20 GiB, and 64 GiB leaves room for fatter users or a larger
 * segment while still ending a deflate bomb (≈1,000:1) that would otherwise read for hours.
 */
export const MAX_INFLATED_BYTES = 64 * GiB;

/** Files in a zip: Braze writes one per ~5,000 users, so this is a segment of ~500M users. */
export const MAX_ARCHIVE_ENTRIES = 100_000;

/**
 * The archive as downloaded, into the instance's temporary storage. NDJSON with the same keys on
 * every line deflates well over 4:1, so 16 GiB holds more than MAX_INFLATED_BYTES of real export.
 */
export const MAX_DOWNLOAD_BYTES = 16 * GiB;

export interface ArchiveLimits {
  /** The longest line, in bytes, without its line break. */
  lineBytes: number;
  /** All files of the archive together once inflated, in bytes. */
  inflatedBytes: number;
  /** Files in a zip. */
  entries: number;
  /** The archive as downloaded, in bytes. */
  downloadBytes: number;
}

export const ARCHIVE_LIMITS: Readonly<ArchiveLimits> = {
  lineBytes: MAX_LINE_BYTES,
  inflatedBytes: MAX_INFLATED_BYTES,
  entries: MAX_ARCHIVE_ENTRIES,
  downloadBytes: MAX_DOWNLOAD_BYTES,
};

const download = axios.create({ proxy: false, maxRedirects: 5, validateStatus: () => true, responseType: 'stream', timeout: 120_000 });

/** Until the export is ready its URL answers 404 (or 403, as object stores do for a key that is not there yet). */
const NOT_READY = new Set([403, 404]);

/** Plain http is only for the local Braze server; anywhere else the pre-signed URL and the users' data travel encrypted. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

export type ArchiveState = 'ready' | 'notReady';

/** Whether the archive is there, without reading it. */
export async function probeArchive(url: string): Promise<ArchiveState> {
  const response = await get(url);
  (response.data as Readable).destroy();
  if (NOT_READY.has(response.status)) return 'notReady';
  if (response.status !== 200) throw new BrazeRetryableError(`the segment export's download answered ${response.status}`, response.status);
  return 'ready';
}

/**
 * Downloads the archive into `file`; 'notReady' if it is not there (any more). An archive larger
 * than `limits.downloadBytes` is refused by its Content-Length, or cut off as soon as it passes it;
 * whatever was written of a download that did not finish is removed.
 */
export async function downloadArchive(url: string, file: string, limits: ArchiveLimits = ARCHIVE_LIMITS, signal?: AbortSignal): Promise<ArchiveState> {
  const response = await get(url);
  const body = response.data as Readable;
  if (response.status !== 200) {
    body.destroy();
    if (NOT_READY.has(response.status)) return 'notReady';
    throw new BrazeRetryableError(`the segment export's download answered ${response.status}`, response.status);
  }
  const declaredBytes = Number(response.headers['content-length']);
  if (declaredBytes > limits.downloadBytes) {
    body.destroy();
    throw new InvalidInputError(`the archive is ${bytes(declaredBytes)}, more than the ${bytes(limits.downloadBytes)} an export download may be; refused`);
  }
  let receivedBytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      receivedBytes += chunk.length;
      if (receivedBytes <= limits.downloadBytes) return done(null, chunk);
      done(new InvalidInputError(`the archive is more than ${bytes(limits.downloadBytes)}, the most an export download may be; refused`));
    },
  });
  try {
    await pipeline(body, counter, createWriteStream(file), signal ? { signal } : {});
  } catch (error) {
    await removeArchive(file);
    signal?.throwIfAborted();
    if (error instanceof InvalidInputError) throw error;
    throw new BrazeRetryableError(`the segment export's download broke off: ${(error as { code?: string }).code ?? 'network error'}`, 0);
  }
  return 'ready';
}

async function get(url: string) {
  const refused = refusal(url);
  if (refused) throw refused;
  let redirectRefused: InvalidInputError | undefined;
  try {
    return await download.get<Readable>(url, {
      // A redirect is followed only where the URL itself could have pointed.
      beforeRedirect: (options) => {
        redirectRefused = refusal(String(options.href), 'redirect');
        if (redirectRefused) throw redirectRefused;
      },
    });
  } catch (error) {
    if (redirectRefused) throw redirectRefused;
    // The URL is pre-signed: it is never written to a log or an error.
    throw new BrazeRetryableError(`the segment export could not be downloaded: ${(error as { code?: string }).code ?? 'network error'}`, 0);
  }
}

/** Why the archive may not be fetched from `url`, naming only its scheme and host (the query holds the signature). */
function refusal(url: string, how: 'url' | 'redirect' = 'url'): InvalidInputError | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return new InvalidInputError(`the archive's download URL ${how === 'url' ? 'is not a URL' : 'redirects to something that is not a URL'}; refused`);
  }
  if (parsed.protocol === 'https:' || (parsed.protocol === 'http:' && LOOPBACK_HOSTS.has(parsed.hostname))) return undefined;
  const where = `${parsed.protocol}//${parsed.host}`;
  return new InvalidInputError(
    how === 'url'
      ? `the archive's download URL (${where}) is not https; refused`
      : `the archive's download URL redirects to ${where}, which is not https; refused`,
  );
}

export async function removeArchive(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

export interface ArchiveLine {
  text: string;
  /** The entry and line number, for a message about the line that never quotes it. */
  where: string;
}

/** Each non-empty line of the archive's NDJSON files, with where it is (entry name and line number), within `limits`. */
export async function* archiveLines(file: string, limits: ArchiveLimits = ARCHIVE_LIMITS): AsyncGenerator<ArchiveLine> {
  const head = Buffer.alloc(4);
  const handle = await open(file, 'r');
  try {
    await handle.read(head, 0, 4, 0);
  } finally {
    await handle.close();
  }
  const inflated = { bytes: 0 };
  if (head.readUInt32LE(0) === 0x04034b50 || head.readUInt32LE(0) === 0x06054b50) {
    yield* zipLines(file, limits, inflated);
    return;
  }
  const source = createReadStream(file);
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  // pipeline, not pipe: the file is closed whichever end stops first.
  const input = gzip ? pipelineCallback(source, createGunzip(), () => undefined) : source;
  try {
    yield* lines(input, 'export', limits, inflated);
  } finally {
    input.destroy();
    source.destroy();
  }
}

/**
 * Splits bytes at line feeds, holding at most `limits.lineBytes` (plus a carriage return) of a line
 * that has not ended: a longer one is refused as soon as it is seen, not once it has been read.
 */
async function* lines(input: Readable, name: string, limits: ArchiveLimits, inflated: { bytes: number }): AsyncGenerator<ArchiveLine> {
  let n = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const tooLong = () =>
    new InvalidInputError(`the archive's ${name} line ${n + 1} is longer than ${bytes(limits.lineBytes)}, the most a user's line may be; refused`);
  const take = (tail: Buffer): ArchiveLine | undefined => {
    let line = pending.length ? Buffer.concat([...pending, tail], pendingBytes + tail.length) : tail;
    pending = [];
    pendingBytes = 0;
    if (line.length && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    if (line.length > limits.lineBytes) throw tooLong();
    n += 1;
    const text = line.toString('utf8');
    return text.trim() ? { text, where: `${name} line ${n}` } : undefined;
  };
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      inflated.bytes += chunk.length;
      if (inflated.bytes > limits.inflatedBytes) throw tooMuchInflated(limits);
      let start = 0;
      for (let end = chunk.indexOf(0x0a); end !== -1; start = end + 1, end = chunk.indexOf(0x0a, start)) {
        if (pendingBytes + end - start > limits.lineBytes + 1) throw tooLong();
        const line = take(chunk.subarray(start, end));
        if (line) yield line;
      }
      if (start < chunk.length) {
        pending.push(chunk.subarray(start));
        pendingBytes += chunk.length - start;
        if (pendingBytes > limits.lineBytes + 1) throw tooLong();
      }
    }
  } catch (error) {
    if (error instanceof InvalidInputError) throw error;
    throw unreadable(error as Error);
  }
  if (pendingBytes) {
    const line = take(Buffer.alloc(0));
    if (line) yield line;
  }
}

async function* zipLines(file: string, limits: ArchiveLimits, inflated: { bytes: number }): AsyncGenerator<ArchiveLine> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.open(file, { lazyEntries: true, autoClose: false }, (error, opened) => (error ? reject(unreadable(error)) : resolve(opened))),
  );
  try {
    // The central directory says how many files there are before any is read.
    if (zip.entryCount > limits.entries)
      throw new InvalidInputError(`the archive holds ${count(zip.entryCount)} files, more than the ${count(limits.entries)} an export may have; refused`);
    let declaredBytes = 0;
    for (;;) {
      const entry = await nextEntry(zip);
      if (!entry) return;
      if (entry.fileName.endsWith('/')) continue;
      // A name is up to 64 KB of the archive's choosing; the run's error (a table property) must stay small.
      const name = entry.fileName.length > 120 ? `${entry.fileName.slice(0, 119)}…` : entry.fileName;
      // What a file says it inflates to refuses it before it is inflated; what it holds is counted as it inflates (yauzl also refuses more than it declared).
      declaredBytes += entry.uncompressedSize;
      if (declaredBytes > limits.inflatedBytes) throw tooMuchInflated(limits, `${name} declares ${bytes(entry.uncompressedSize)}`);
      const stream = await new Promise<Readable>((resolve, reject) =>
        zip.openReadStream(entry, (error, opened) => (error ? reject(unreadable(error)) : resolve(opened))),
      );
      try {
        yield* lines(stream, name, limits, inflated);
      } finally {
        stream.destroy();
      }
    }
  } finally {
    zip.close();
  }
}

function nextEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry | undefined> {
  return new Promise<yauzl.Entry | undefined>((resolve, reject) => {
    const onEntry = (e: yauzl.Entry) => {
      zip.off('end', onEnd).off('error', onError);
      resolve(e);
    };
    const onEnd = () => {
      zip.off('entry', onEntry).off('error', onError);
      resolve(undefined);
    };
    const onError = (error: Error) => {
      zip.off('entry', onEntry).off('end', onEnd);
      reject(unreadable(error));
    };
    zip.once('entry', onEntry).once('end', onEnd).once('error', onError);
    zip.readEntry();
  });
}

function tooMuchInflated(limits: ArchiveLimits, declared?: string): InvalidInputError {
  return new InvalidInputError(
    `the archive inflates to more than ${bytes(limits.inflatedBytes)}${declared ? ` (${declared})` : ''}, the most an export may be; refused`,
  );
}

function unreadable(error: Error): InvalidInputError {
  return new InvalidInputError(`the archive cannot be read: ${error.message}`);
}

/** A size as a person reads it: 3 MiB, 1.5 GiB, 512 bytes. */
function bytes(n: number): string {
  for (const [unit, size] of [
    ['GiB', GiB],
    ['MiB', MiB],
    ['KiB', KiB],
  ] as const) {
    if (n >= size) return `${Number((n / size).toFixed(1))} ${unit}`;
  }
  return `${n} bytes`;
}

const count = (n: number) => n.toLocaleString('en-US');
