import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { getHeapStatistics } from 'node:v8';
import { crc32, createDeflateRaw, createGzip } from 'node:zlib';
import { InvalidInputError } from '../../shared/errors';
import { archiveLines, downloadArchive, probeArchive, ARCHIVE_LIMITS, type ArchiveLimits } from '../../shared/reconcile/exportArchive';
import { waitFor } from '../helpers/expectations';

const MiB = 1024 * 1024;

/** Limits small enough that a test can breach each one with a few MiB. */
const SMALL: ArchiveLimits = { lineBytes: MiB, inflatedBytes: 4 * MiB, entries: 10, downloadBytes: MiB };

/** An entry's content as parts, so a hostile entry of many MiB is never one buffer here either. */
type Parts = () => Iterable<Buffer>;
const text =
  (value: string): Parts =>
  () => [Buffer.from(value, 'utf8')];
const userLines = (from: number, count: number): string => Array.from({ length: count }, (_, i) => `{"external_id":"u${from + i}"}\n`).join('');
/** One line `{"external_id":"big","notes":"xxx…"}` of about `bytes`, in 1 MiB parts. */
const hugeLine = (bytes: number): Parts =>
  function* () {
    yield Buffer.from('{"external_id":"big","notes":"');
    const filler = Buffer.alloc(MiB, 'x');
    for (let sent = 0; sent < bytes; sent += MiB) yield filler;
    yield Buffer.from('"}\n');
  };

async function deflated(parts: Iterable<Buffer>, compressor: NodeJS.ReadWriteStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const out = Readable.from(parts).pipe(compressor);
  for await (const chunk of out) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A zip of deflated entries as Braze writes them (local headers, central directory, end record). */
async function zipOf(entries: { name: string; parts: Parts }[]): Promise<Buffer> {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name, 'utf8');
    let crc = 0;
    let size = 0;
    for (const part of entry.parts()) {
      crc = crc32(part, crc);
      size += part.length;
    }
    const data = await deflated(entry.parts(), createDeflateRaw());
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    locals.push(local, name, data);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

const gzipOf = (parts: Parts) => deflated(parts(), createGzip());

let files = 0;
async function archiveFile(content: Buffer): Promise<string> {
  const file = path.join(tmpdir(), `export-archive-test-${process.pid}-${++files}`);
  await writeFile(file, content);
  return file;
}

/** Whether this process still holds `file` open (Linux; elsewhere it cannot tell, and says no). */
function holdsOpen(file: string): boolean {
  if (!existsSync('/proc/self/fd')) return false;
  return readdirSync('/proc/self/fd').some((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === file;
    } catch {
      return false;
    }
  });
}

interface Reading {
  lines: string[];
  error?: unknown;
  /** How far the heap grew above where it started while the archive was read. */
  peakHeapGrowthBytes: number;
}

/** Reads the archive with the connector's reader, keeping each line's place and the heap's high-water mark. */
async function read(file: string, limits?: ArchiveLimits): Promise<Reading> {
  const start = getHeapStatistics().used_heap_size;
  let peak = start;
  const sampler = setInterval(() => (peak = Math.max(peak, getHeapStatistics().used_heap_size)), 1);
  const lines: string[] = [];
  let error: unknown;
  try {
    for await (const line of archiveLines(file, limits)) {
      if (line.text.length <= 100) {
        lines.push(line.text);
        continue;
      }
      lines.push(`${line.where}: ${line.text.length} characters`);
      // Holds a long line a moment, as the export step does while it parses it: a sample sees it.
      await new Promise((resolve) => setTimeout(resolve, 5));
      peak = Math.max(peak, getHeapStatistics().used_heap_size);
    }
  } catch (caught) {
    error = caught;
  } finally {
    clearInterval(sampler);
  }
  return { lines, error, peakHeapGrowthBytes: peak - start };
}

describe('the segment export archive reader has bounds', () => {
  const made: string[] = [];
  afterEach(async () => {
    await Promise.all(made.splice(0).map((file) => rm(file, { force: true })));
  });
  const archive = async (content: Buffer) => {
    const file = await archiveFile(content);
    made.push(file);
    return file;
  };

  it('has defaults generous for a real export and bounded for a hostile one', () => {
    expect(ARCHIVE_LIMITS.lineBytes).toBeGreaterThanOrEqual(MiB);
    expect(ARCHIVE_LIMITS.lineBytes).toBeLessThanOrEqual(16 * MiB);
    // 20M users of ~1 KiB each, with room to spare, in files of 5,000.
    expect(ARCHIVE_LIMITS.inflatedBytes).toBeGreaterThan(20_000_000 * 1024);
    expect(ARCHIVE_LIMITS.entries).toBeGreaterThan(20_000_000 / 5_000);
    expect(Number.isFinite(ARCHIVE_LIMITS.inflatedBytes + ARCHIVE_LIMITS.downloadBytes + ARCHIVE_LIMITS.entries)).toBe(true);
  });

  it.each([
    ['a zip', (parts: Parts) => zipOf([{ name: 'prefix/0.txt', parts }]), 'prefix/0.txt line 2'],
    ['a gzip', gzipOf, 'export line 2'],
  ])('refuses, in %s, a line longer than the cap as soon as it reads past the cap, without holding the line', async (_kind, pack, where) => {
    // 64 MiB of one line packs into ~64 KiB: the 408 KB archive of issue 15 held 400 MB this way.
    const file = await archive(await pack(() => [Buffer.from('{"external_id":"first"}\n'), ...hugeLine(64 * MiB)()]));
    // The inflated cap is not what stops this archive: the zip declares its 64 MiB honestly.
    const reading = await read(file, { ...SMALL, inflatedBytes: 128 * MiB });
    expect(reading.peakHeapGrowthBytes).toBeLessThan(32 * MiB);
    expect(reading.lines).toEqual(['{"external_id":"first"}']);
    expect(reading.error).toBeInstanceOf(InvalidInputError);
    expect((reading.error as Error).message).toBe(`the archive's ${where} is longer than 1 MiB, the most a user's line may be; refused`);
    await waitFor(() => !holdsOpen(file), 2_000);
  });

  it('refuses a too-long line in plain NDJSON too', async () => {
    const plain: Buffer[] = [...hugeLine(3 * MiB)()];
    const file = await archive(Buffer.concat(plain));
    const reading = await read(file, SMALL);
    expect(reading.lines).toEqual([]);
    expect((reading.error as Error).message).toBe("the archive's export line 1 is longer than 1 MiB, the most a user's line may be; refused");
    await waitFor(() => !holdsOpen(file), 2_000);
  });

  it('reads a line as long as the cap, CRLF endings and a last line without one', async () => {
    const [head, tail] = ['{"external_id":"edge","notes":"', '"}'];
    const line = `${head}${'y'.repeat(MiB - head.length - tail.length)}${tail}`;
    expect(Buffer.byteLength(line)).toBe(MiB);
    const file = await archive(await zipOf([{ name: 'p/0.txt', parts: text(`${line}\r\n{"external_id":"é"}\r\n\n{"external_id":"last"}`) }]));
    const reading = await read(file, SMALL);
    expect(reading.error).toBeUndefined();
    expect(reading.lines).toEqual([`p/0.txt line 1: ${MiB} characters`, '{"external_id":"é"}', '{"external_id":"last"}']);
  });

  it('refuses a zip of more files than the cap before reading any of them', async () => {
    const entries = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `p/${i}.txt`, parts: text(userLines(i, 1)) }));
    const file = await archive(await zipOf(entries(11)));
    const reading = await read(file, SMALL);
    expect(reading.lines).toEqual([]);
    expect(reading.error).toBeInstanceOf(InvalidInputError);
    expect((reading.error as Error).message).toBe('the archive holds 11 files, more than the 10 an export may have; refused');
    await waitFor(() => !holdsOpen(file), 2_000);

    const atTheCap = await read(await archive(await zipOf(entries(10))), SMALL);
    expect(atTheCap.error).toBeUndefined();
    expect(atTheCap.lines).toHaveLength(10);
  });

  it('refuses a zip whose files inflate to more than the cap, by what they declare and by what they hold', async () => {
    // Three honest files of ~1.6 MiB: the third one's declared size passes the 4 MiB cap before it is opened.
    const lines = userLines(0, 60_000);
    const entries = [0, 1, 2].map((i) => ({ name: `p/${i}.txt`, parts: text(lines) }));
    const file = await archive(await zipOf(entries));
    const reading = await read(file, SMALL);
    expect(reading.lines).toHaveLength(120_000);
    expect(reading.error).toBeInstanceOf(InvalidInputError);
    expect((reading.error as Error).message).toMatch(/^the archive inflates to more than 4 MiB \(p\/2\.txt declares .*\), the most an export may be; refused$/);
    await waitFor(() => !holdsOpen(file), 2_000);
  });

  it('refuses a gzip that inflates to more than the cap, while it inflates', async () => {
    const lines = userLines(0, 100_000); // ~2.9 MiB
    const file = await archive(await gzipOf(() => [Buffer.from(lines), Buffer.from(lines)]));
    const reading = await read(file, SMALL);
    expect(reading.lines.length).toBeGreaterThan(100_000);
    expect(reading.lines.length).toBeLessThan(200_000);
    expect(reading.error).toBeInstanceOf(InvalidInputError);
    expect((reading.error as Error).message).toBe('the archive inflates to more than 4 MiB, the most an export may be; refused');
    await waitFor(() => !holdsOpen(file), 2_000);
  });

  it('reads with the default limits when none are given', async () => {
    const file = await archive(await zipOf([{ name: 'p/0.txt', parts: hugeLine(2 * MiB) }]));
    const reading = await read(file);
    expect(reading.error).toBeUndefined();
    expect(reading.lines).toHaveLength(1);
  });
});

describe('the segment export download has bounds', () => {
  let server: http.Server;
  let url: string;
  /** What the server did with its last answer: how much it wrote, and whether the client hung up first. */
  let served: { bytes: number; finished: boolean; closed: boolean; requests: number };
  let answer: (response: http.ServerResponse) => Promise<void> = async () => undefined;
  const made: string[] = [];

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      served.requests += 1;
      response.on('finish', () => (served.finished = true));
      response.on('close', () => (served.closed = true));
      void answer(response).catch(() => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/__exports/1b2c.zip`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  beforeEach(() => {
    served = { bytes: 0, finished: false, closed: false, requests: 0 };
  });
  afterEach(async () => {
    await Promise.all(made.splice(0).map((file) => rm(file, { force: true })));
  });
  const target = () => {
    const file = path.join(tmpdir(), `export-download-test-${process.pid}-${++files}`);
    made.push(file);
    return file;
  };

  /** Writes `total` bytes in 64 KiB chunks, waiting for the client to take each, without a Content-Length unless told. */
  const streamOf = (total: number, declare: boolean) => async (response: http.ServerResponse) => {
    response.writeHead(200, { 'Content-Type': 'application/zip', ...(declare ? { 'Content-Length': total } : {}) });
    const chunk = Buffer.alloc(64 * 1024, 'z');
    while (served.bytes < total && !response.destroyed) {
      served.bytes += chunk.length;
      if (!response.write(chunk)) await new Promise((resolve) => response.once('drain', resolve).once('close', resolve));
    }
    if (!response.destroyed) response.end();
  };

  it('refuses an archive whose Content-Length is over the cap without downloading it', async () => {
    answer = streamOf(64 * MiB, true);
    const file = target();
    const refusal = await downloadArchive(url, file, SMALL).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refusal).toBeInstanceOf(InvalidInputError);
    expect((refusal as Error).message).toBe('the archive is 64 MiB, more than the 1 MiB an export download may be; refused');
    expect(existsSync(file)).toBe(false);
    await waitFor(() => served.closed, 2_000);
    expect(served.finished).toBe(false);
    expect(served.bytes).toBeLessThan(16 * MiB);
  });

  it('stops a download without a length as soon as it passes the cap, and removes what it wrote', async () => {
    // An answer that would go on for 64 MiB: the reader hangs up after 1 MiB.
    answer = streamOf(64 * MiB, false);
    const file = target();
    await expect(downloadArchive(url, file, SMALL)).rejects.toThrow('the archive is more than 1 MiB, the most an export download may be; refused');
    expect(existsSync(file)).toBe(false);
    await waitFor(() => served.closed, 2_000);
    expect(served.finished).toBe(false);
    expect(served.bytes).toBeLessThan(16 * MiB);
    await waitFor(() => !holdsOpen(file), 2_000);
  });

  it('downloads an archive at the cap', async () => {
    answer = streamOf(MiB, false);
    const file = target();
    await expect(downloadArchive(url, file, SMALL)).resolves.toBe('ready');
    expect(served.finished).toBe(true);
  });

  it.each([
    ['plain http to a host that is not this one', 'http://braze-exports.invalid/1b2c.zip?X-Amz-Signature=s3cr3t'],
    ['plain http to a look-alike of loopback', 'http://127.0.0.1.braze-exports.invalid/1b2c.zip?X-Amz-Signature=s3cr3t'],
    ['another scheme', 'ftp://braze-exports.invalid/1b2c.zip?X-Amz-Signature=s3cr3t'],
    ['not a URL', 'braze-exports/1b2c.zip?X-Amz-Signature=s3cr3t'],
  ])('refuses a download URL of %s, before asking it anything, without repeating its query', async (_what, hostile) => {
    for (const attempt of [() => probeArchive(hostile), () => downloadArchive(hostile, target(), SMALL)]) {
      const refusal = await attempt().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refusal).toBeInstanceOf(InvalidInputError);
      expect((refusal as Error).message).toMatch(/^the archive's download URL (\(\w+:\/\/[^/?]+\) is not https|is not a URL); refused$/);
      expect((refusal as Error).message).not.toContain('s3cr3t');
    }
  });

  it('refuses a redirect to plain http off this host, without repeating the query', async () => {
    answer = async (response) => {
      response.writeHead(302, { Location: 'http://braze-exports.invalid/1b2c.zip?X-Amz-Signature=s3cr3t' });
      response.end();
    };
    for (const attempt of [() => probeArchive(url), () => downloadArchive(url, target(), SMALL)]) {
      const refusal = await attempt().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refusal).toBeInstanceOf(InvalidInputError);
      expect((refusal as Error).message).toBe("the archive's download URL redirects to http://braze-exports.invalid, which is not https; refused");
    }
  });
});
