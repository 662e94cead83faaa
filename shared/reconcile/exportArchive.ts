import { createReadStream, createWriteStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
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
 */

const download = axios.create({ proxy: false, maxRedirects: 5, validateStatus: () => true, responseType: 'stream', timeout: 120_000 });

/** Until the export is ready its URL answers 404 (or 403, as object stores do for a key that is not there yet). */
const NOT_READY = new Set([403, 404]);

export type ArchiveState = 'ready' | 'notReady';

/** Whether the archive is there, without reading it. */
export async function probeArchive(url: string): Promise<ArchiveState> {
  const response = await get(url);
  (response.data as Readable).destroy();
  if (NOT_READY.has(response.status)) return 'notReady';
  if (response.status !== 200) throw new BrazeRetryableError(`the segment export's download answered ${response.status}`, response.status);
  return 'ready';
}

/** Downloads the archive into `file`; 'notReady' if it is not there (any more). */
export async function downloadArchive(url: string, file: string): Promise<ArchiveState> {
  const response = await get(url);
  const body = response.data as Readable;
  if (response.status !== 200) {
    body.destroy();
    if (NOT_READY.has(response.status)) return 'notReady';
    throw new BrazeRetryableError(`the segment export's download answered ${response.status}`, response.status);
  }
  await pipeline(body, createWriteStream(file));
  return 'ready';
}

async function get(url: string) {
  try {
    return await download.get<Readable>(url);
  } catch (error) {
    // The URL is pre-signed: it is never written to a log or an error.
    throw new BrazeRetryableError(`the segment export could not be downloaded: ${(error as { code?: string }).code ?? 'network error'}`, 0);
  }
}

export async function removeArchive(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

/** Each non-empty line of the archive's NDJSON files, with where it is (entry name and line number). */
export async function* archiveLines(file: string): AsyncGenerator<{ text: string; where: string }> {
  const head = Buffer.alloc(4);
  const handle = await open(file, 'r');
  try {
    await handle.read(head, 0, 4, 0);
  } finally {
    await handle.close();
  }
  if (head.readUInt32LE(0) === 0x04034b50 || head.readUInt32LE(0) === 0x06054b50) {
    yield* zipLines(file);
    return;
  }
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  const input = gzip ? createReadStream(file).pipe(createGunzip()) : createReadStream(file);
  yield* lines(input, 'export');
}

async function* lines(input: Readable, name: string): AsyncGenerator<{ text: string; where: string }> {
  let n = 0;
  for await (const text of createInterface({ input, crlfDelay: Infinity })) {
    n += 1;
    if (text.trim()) yield { text, where: `${name} line ${n}` };
  }
}

async function* zipLines(file: string): AsyncGenerator<{ text: string; where: string }> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.open(file, { lazyEntries: true, autoClose: false }, (error, opened) => (error ? reject(unreadable(error)) : resolve(opened))),
  );
  try {
    for (;;) {
      const entry = await new Promise<yauzl.Entry | undefined>((resolve, reject) => {
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
      if (!entry) return;
      if (entry.fileName.endsWith('/')) continue;
      const stream = await new Promise<Readable>((resolve, reject) =>
        zip.openReadStream(entry, (error, opened) => (error ? reject(unreadable(error)) : resolve(opened))),
      );
      yield* lines(stream, entry.fileName);
    }
  } finally {
    zip.close();
  }
}

function unreadable(error: Error): InvalidInputError {
  return new InvalidInputError(`the segment export's archive cannot be read: ${error.message}`);
}
