import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BrazeServer } from '../../local/brazeServer';
import { archiveLines } from '../../shared/reconcile/exportArchive';
import { waitFor } from '../helpers/expectations';

const KEY = '3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a';

/** The archive's entries and their lines, read with the connector's own archive reader (from a file, as it reads them). */
async function readArchive(archive: Buffer): Promise<{ name: string; text: string }[]> {
  const file = path.join(tmpdir(), `segment-export-test-${process.pid}-${Date.now()}`);
  await writeFile(file, archive);
  const entries: { name: string; text: string }[] = [];
  try {
    for await (const line of archiveLines(file)) {
      const name = line.where.replace(/ line \d+$/, '');
      if (entries.at(-1)?.name !== name) entries.push({ name, text: '' });
      entries.at(-1)!.text += `${line.text}\n`;
    }
  } finally {
    await rm(file, { force: true });
  }
  return entries;
}

describe('the local Braze server: POST /users/export/segment', () => {
  let braze: BrazeServer;
  afterEach(async () => {
    await braze?.stop();
  });

  async function track(attributes: Record<string, unknown>[]) {
    for (let i = 0; i < attributes.length; i += 75) {
      const answer = await fetch(`${braze.url}/users/track`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ attributes: attributes.slice(i, i + 75) }),
      });
      expect(answer.status).toBe(201);
    }
  }

  const exportSegment = (body: Record<string, unknown>, key = KEY) =>
    fetch(`${braze.url}/users/export/segment`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('exports the members of a segment asynchronously, as NDJSON in a zip behind a URL that appears when ready, one export per segment at a time', async () => {
    braze = new BrazeServer({ apiKey: KEY, segments: { 'seg-high-value': 'ci_high_value' }, exportDelayMs: 300 });
    await braze.start();
    await track([
      { external_id: 'a', email: 'a@example.com', first_name: 'A', ci_high_value: true, loyalty_points: 1 },
      { external_id: 'b', email: 'b@example.com', ci_high_value: false },
      { user_alias: { alias_label: 'ci_customer_id', alias_name: 'c' }, _update_existing_only: false, ci_high_value: true },
      { email: 'd@example.com', ci_high_value: true },
    ]);
    const answer = await exportSegment({ segment_id: 'seg-high-value', fields_to_export: ['external_id', 'email', 'user_aliases', 'custom_attributes'] });
    expect(answer.status).toBe(201);
    const { object_prefix: prefix, url } = (await answer.json()) as { object_prefix: string; url: string };
    expect(url).toMatch(/\.zip$/);
    // Not there yet, and the same segment cannot be exported twice at once.
    expect((await fetch(url)).status).toBe(404);
    expect((await exportSegment({ segment_id: 'seg-high-value', fields_to_export: ['external_id'] })).status).toBe(429);
    let archive: Buffer | undefined;
    await waitFor(async () => {
      const download = await fetch(url);
      if (download.status !== 200) return false;
      archive = Buffer.from(await download.arrayBuffer());
      return true;
    }, 5_000);
    const files = await readArchive(archive!);
    expect(files.map((f) => f.name)).toEqual([`${prefix}/0.txt`]);
    const users = files[0].text
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(users).toEqual([
      { external_id: 'a', email: 'a@example.com', custom_attributes: { ci_high_value: true, loyalty_points: 1 } },
      { user_aliases: [{ alias_label: 'ci_customer_id', alias_name: 'c' }], custom_attributes: { ci_high_value: true } },
      { email: 'd@example.com', custom_attributes: { ci_high_value: true } },
    ]);
    // Once ready, the segment can be exported again; with a callback endpoint, Braze calls it when the export is ready.
    const called: unknown[] = [];
    const receiver = http.createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      request.on('end', () => {
        called.push(JSON.parse(body));
        response.end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const callbackEndpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/braze-export-ready`;
      const again = await exportSegment({ segment_id: 'seg-high-value', fields_to_export: ['external_id'], callback_endpoint: callbackEndpoint });
      expect(again.status).toBe(201);
      const { object_prefix: againPrefix } = (await again.json()) as { object_prefix: string };
      await waitFor(() => called.length > 0, 5_000);
      expect(called).toEqual([{ object_prefix: againPrefix, segment_id: 'seg-high-value' }]);
    } finally {
      await new Promise((resolve) => receiver.close(resolve));
    }
    expect((await exportSegment({ segment_id: 'no-such-segment', fields_to_export: ['external_id'] })).status).toBe(400);
    expect((await exportSegment({ segment_id: 'seg-high-value', fields_to_export: ['external_id'] }, 'wrong')).status).toBe(401);
  });

  it('splits a large segment into files of 5,000 users, and writes gzip when asked', async () => {
    braze = new BrazeServer({ apiKey: KEY, segments: { newsletter: 'ci_newsletter' }, exportDelayMs: 50 });
    await braze.start();
    await track(Array.from({ length: 5_200 }, (_, i) => ({ external_id: `u${i}`, ci_newsletter: true })));
    const zipped = (await (await exportSegment({ segment_id: 'newsletter', fields_to_export: ['external_id'] })).json()) as { url: string };
    await waitFor(async () => (await fetch(zipped.url)).status === 200, 5_000);
    const files = await readArchive(Buffer.from(await (await fetch(zipped.url)).arrayBuffer()));
    expect(files.map((f) => f.text.trim().split('\n').length)).toEqual([5_000, 200]);

    const gzipped = (await (await exportSegment({ segment_id: 'newsletter', fields_to_export: ['external_id'], output_format: 'gzip' })).json()) as {
      url: string;
    };
    expect(gzipped.url).toMatch(/\.gz$/);
    await waitFor(async () => (await fetch(gzipped.url)).status === 200, 5_000);
    const lines = (await readArchive(Buffer.from(await (await fetch(gzipped.url)).arrayBuffer()))).flatMap((entry) => entry.text.trim().split('\n'));
    expect(lines).toHaveLength(5_200);
    expect(JSON.parse(lines[5_199])).toEqual({ external_id: 'u5199' });
  });
});
