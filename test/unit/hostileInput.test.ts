import { Readable } from 'node:stream';
import { RateLimitPacer } from '../../shared/braze/pacer';
import { MAX_RESET_AHEAD_MS, readRateLimit } from '../../shared/braze/rateLimitHeaders';
import { redactSecret } from '../../shared/braze/redact';
import { convertCell, JSON_MAX_DEPTH } from '../../shared/ci/dataTypes';
import { blobNameFromLocation, partitionAddress } from '../../shared/ci/modelJson';
import { csvFormatOf, MAX_RECORD_CHARS, readPartition, type PartitionRecord } from '../../shared/ci/partitionReader';
import { parseBrazeEndpoint } from '../../shared/config/endpoint';
import { parseSecretUri } from '../../shared/braze/apiKey';
import { BrazeRetryableError, InvalidInputError } from '../../shared/errors';

const azurite = { url: 'http://127.0.0.1:10000/devstoreaccount1/customer-insights', containerName: 'customer-insights' };
const azure = { url: 'https://contoso.blob.core.windows.net/customer-insights', containerName: 'customer-insights' };
const PART = 'CustomerInsights_1/BrazeExport/HighValue/2026/11/28/0600/HighValue_1.csv';

describe('partition locations in model.json', () => {
  it('name a blob snapshot with ?snapshot= in any case, only in a full URI, and never with a signature', () => {
    const base = `https://contoso.blob.core.windows.net/customer-insights/${PART}`;
    const at = '2018-11-14T19:37:51.7526830Z';
    expect(partitionAddress(`${base}?snapshot=${at}`, azure)).toEqual({ blobName: PART, snapshot: at });
    expect(partitionAddress(`${base}?Snapshot=${at}`, azure)).toEqual({ blobName: PART, snapshot: at });
    expect(partitionAddress(base, azure)).toEqual({ blobName: PART });
    expect(() => partitionAddress(`${PART}?snapshot=${at}`, azure)).toThrow(/has a query but no scheme/);
    expect(() => partitionAddress(`${base}?snapshot=${at}&sig=abc`, azure)).toThrow(/shared access signature/);
    expect(() => partitionAddress(`${base}?snapshot=yesterday`, azure)).toThrow(/not a blob snapshot time/);
  });

  it('are read inside the export container of the configured account', () => {
    expect(blobNameFromLocation(`https://contoso.blob.core.windows.net/customer-insights/${PART}`, azure)).toBe(PART);
    expect(blobNameFromLocation(`https://contoso.dfs.core.windows.net/customer-insights/${PART}`, azure)).toBe(PART);
    expect(blobNameFromLocation(`http://127.0.0.1:10000/devstoreaccount1/customer-insights/${PART}`, azurite)).toBe(PART);
    expect(blobNameFromLocation(PART, azure)).toBe(PART);
    expect(blobNameFromLocation(`https://contoso.blob.core.windows.net/customer-insights/${PART.replace('HighValue_1', 'High%20Value_1')}`, azure)).toBe(
      PART.replace('HighValue_1', 'High Value_1'),
    );
  });

  it('are refused with a reason when they leave it', () => {
    const hostile = [
      `https://contoso.blob.core.windows.net/customer-insights/CustomerInsights_1/../../other/secret.csv`,
      `https://contoso.blob.core.windows.net/customer-insights/CustomerInsights_1/%2e%2e/x.csv`,
      `https://contoso.blob.core.windows.net/customer-insights/CustomerInsights_1/%2E%2e%2Fx.csv`,
      `https://contoso.blob.core.windows.net/customer-insights/./${PART}`,
      `https://contoso.blob.core.windows.net/other-container/${PART}`,
      `https://evil.blob.core.windows.net/customer-insights/${PART}`,
      `https://contoso.blob.core.windows.net.evil.com/customer-insights/${PART}`,
      `https://contoso.blob.core.windows.net/customer-insights/${PART}?sv=2024&sig=abc`,
      `https://contoso.blob.core.windows.net/customer-insights//${PART}`,
      `file:///etc/passwd`,
      `../${PART}`,
      `${PART}/%00`,
    ];
    for (const location of hostile) expect(() => blobNameFromLocation(location, azure)).toThrow(InvalidInputError);
    expect(() => blobNameFromLocation(`https://evil.blob.core.windows.net/customer-insights/${PART}`, azure)).toThrow(/not on the storage account/);
    expect(() => blobNameFromLocation(`https://contoso.blob.core.windows.net/other-container/${PART}`, azure)).toThrow(/not in the export container/);
    expect(() => blobNameFromLocation(`http://127.0.0.1:10000/otheraccount/customer-insights/${PART}`, azurite)).toThrow(InvalidInputError);
  });
});

async function read(text: string): Promise<PartitionRecord[]> {
  const records: PartitionRecord[] = [];
  const attributes = [
    { name: 'CustomerId', dataType: 'GUID' as const },
    { name: 'EMail', dataType: 'string' as const },
  ];
  for await (const record of readPartition(Readable.from([Buffer.from(text)]), csvFormatOf(undefined, 'test'), attributes, () => undefined, 'part.csv'))
    records.push(record);
  return records;
}

describe('a hostile CSV', () => {
  it('with an unclosed quote fails the partition with the line, instead of buffering it whole', async () => {
    const text = `1,a@x.com\n"2,b@x.com\n${'3,c@x.com\n'.repeat(Math.ceil(MAX_RECORD_CHARS / 10) + 10)}`;
    await expect(read(text)).rejects.toThrow(/part\.csv: the record at line \d+ is longer than 1 MiB/);
  });

  it('is rejected row by row with the error code and line, never the text the parser quoted', async () => {
    // csv-parse raises two errors for this one line; it is one rejected row.
    const records = await read('"1","a@x.com"\n"ana@example.com"x,"q"\n"3","c@x.com"\n');
    expect(records.map((r) => r.kind)).toEqual(['row', 'invalid', 'row']);
    const invalid = records[1] as { reason: string; line: number };
    expect(invalid.reason).toMatch(/^unreadable CSV: a quote closes a value before its end \(CSV_INVALID_CLOSING_QUOTE\)$/);
    expect(invalid.line).toBe(2);
    expect(invalid.reason).not.toContain('ana');
  });
});

describe('a hostile JSON cell', () => {
  it('nested too deep or too long is refused for that field, without touching the stack', () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    expect(convertCell(deep, 'JSON')).toEqual({ ok: false, reason: 'JSON value longer than 50 KB' });
    const notLong = '['.repeat(JSON_MAX_DEPTH + 1) + ']'.repeat(JSON_MAX_DEPTH + 1);
    expect(convertCell(notLong, 'JSON')).toEqual({ ok: false, reason: `JSON value nested deeper than ${JSON_MAX_DEPTH} levels` });
    expect(convertCell('{"a":"[[[[[[","b":[1,{"c":2}]}', 'JSON')).toEqual({ ok: true, value: { a: '[[[[[[', b: [1, { c: 2 }] } });
  });
});

describe('date-times without a zone', () => {
  const tz = process.env.TZ;
  afterEach(() => {
    process.env.TZ = tz;
  });
  it('are UTC whatever time zone the machine is in', () => {
    process.env.TZ = 'America/New_York';
    expect(convertCell('2024-02-03T04:05:06', 'dateTime')).toEqual({ ok: true, value: '2024-02-03T04:05:06.000Z' });
    expect(convertCell('2024-07-03 04:05', 'dateTime')).toEqual({ ok: true, value: '2024-07-03T04:05:00.000Z' });
    expect(convertCell('07/03/2024 04:05:06', 'dateTime')).toEqual({ ok: true, value: '2024-07-03T04:05:06.000Z' });
    expect(convertCell('2024-02-03T06:05:06+02:00', 'dateTimeOffset')).toEqual({ ok: true, value: '2024-02-03T04:05:06.000Z' });
    expect(convertCell('2024-02-03', 'dateTime')).toEqual({ ok: true, value: '2024-02-03T00:00:00.000Z' });
  });
});

describe('rate-limit headers', () => {
  const now = Date.parse('2026-11-29T10:00:00Z');
  it('read epoch seconds, epoch milliseconds, seconds remaining and HTTP dates', () => {
    expect(readRateLimit({ 'X-RateLimit-Reset': String(now / 1000 + 3) }, now).resetAtMs).toBe(now + 3000);
    expect(readRateLimit({ 'x-ratelimit-reset': String(now + 3000) }, now).resetAtMs).toBe(now + 3000);
    expect(readRateLimit({ 'x-ratelimit-reset': '3' }, now).resetAtMs).toBe(now + 3000);
    expect(readRateLimit({ 'retry-after': new Date(now + 5000).toUTCString() }, now).resetAtMs).toBe(now + 5000);
  });
  it('are clamped to between now and a little over an hour ahead', () => {
    expect(readRateLimit({ 'x-ratelimit-reset': String(now * 1000) }, now).resetAtMs).toBe(now + MAX_RESET_AHEAD_MS);
    expect(readRateLimit({ 'x-ratelimit-reset': '4102444800' }, now).resetAtMs).toBe(now + MAX_RESET_AHEAD_MS);
    expect(readRateLimit({ 'retry-after': '1e12' }, now).resetAtMs).toBe(now + MAX_RESET_AHEAD_MS);
    expect(readRateLimit({ 'x-ratelimit-reset': String(now / 1000 - 60) }, now).resetAtMs).toBe(now);
    expect(readRateLimit({ 'x-ratelimit-reset': '-5' }, now).resetAtMs).toBeUndefined();
  });
  it('that leave no request before the deadline make the pacer hand the wait back instead of sleeping', async () => {
    let clockMs = now;
    const clock = { now: () => clockMs, sleep: async (ms: number) => void (clockMs += ms) };
    const pacer = new RateLimitPacer({ reserveShare: 0, clock });
    pacer.throttled({ remaining: 0, resetAtMs: now + 30 * 60_000 });
    await expect(pacer.acquire(now + 60_000)).rejects.toBeInstanceOf(BrazeRetryableError);
    await expect(pacer.acquire(now + 60_000)).rejects.toMatchObject({ status: 429, retryAtMs: expect.any(Number) });
    expect(clockMs).toBe(now);
  });
});

describe('the Braze endpoint', () => {
  it('allows plain http for loopback addresses only', () => {
    expect(parseBrazeEndpoint('http://127.0.0.1:8080')).toBe('http://127.0.0.1:8080');
    expect(parseBrazeEndpoint('http://localhost:1')).toBe('http://localhost:1');
    expect(parseBrazeEndpoint('http://[::1]:1')).toBe('http://[::1]:1');
    for (const endpoint of ['http://127.evil.com', 'http://127.0.0.1.nip.io', 'http://10.0.0.1', 'http://rest.iad-03.braze.com']) {
      expect(() => parseBrazeEndpoint(endpoint)).toThrow(/plain http is only allowed for loopback/);
    }
  });
});

describe('redaction', () => {
  const key = '6f1c2b8e-1a2b-4c3d-9e8f-0a1b2c3d4e5f';
  it('removes the API key, bearer tokens, key-shaped UUIDs and e-mail addresses', () => {
    expect(redactSecret('Invalid API key: s3cret-key', 's3cret-key')).toBe('Invalid API key: [redacted]');
    expect(redactSecret('Authorization: Bearer abc.def', 'x')).toBe('Authorization: Bearer [redacted]');
    expect(redactSecret(`key ${key}`, '')).toBe('key [redacted]');
    expect(redactSecret('<p>ana.silva+x@example.co.uk was refused</p>', '')).toBe('<p>[e-mail] was refused</p>');
  });
  it('redacts before it cuts, so no piece of a key survives the cut', () => {
    const body = `${'x'.repeat(190)}${'k3y-that-is-long-and-secret'} ana@example.com`;
    const cut = redactSecret(body, 'k3y-that-is-long-and-secret', 200);
    expect(cut).not.toMatch(/k3y/);
    expect(cut).not.toContain('@');
  });
});

describe('the Braze key in Key Vault', () => {
  it('is named by a secret URI, with or without a version', () => {
    expect(parseSecretUri('https://kv-braze.vault.azure.net/secrets/braze-api-key')).toEqual({
      vaultUrl: 'https://kv-braze.vault.azure.net',
      name: 'braze-api-key',
      version: undefined,
    });
    expect(parseSecretUri('https://kv-braze.vault.azure.net/secrets/braze-api-key/0123abcd')).toMatchObject({ name: 'braze-api-key', version: '0123abcd' });
    for (const bad of ['http://kv.vault.azure.net/secrets/k', 'https://kv.vault.azure.net/keys/k', 'https://kv.vault.azure.net/secrets', 'not a url']) {
      expect(() => parseSecretUri(bad)).toThrow(/BRAZE_API_KEY_SECRET_URI/);
    }
  });
});
