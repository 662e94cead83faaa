import { diffProfile } from '../../shared/state/diff';
import { membershipEncoding } from '../../shared/state/membershipEncoding';
import { testConfig } from '../helpers/testStack';
import { MembershipBits } from '../../shared/state/membershipBits';
import { fieldsFingerprint, keyHash, ProfileIndex } from '../../shared/state/profileIndex';
import { gzipSync } from 'node:zlib';
import {
  decodeBatchMessage,
  decodeRunMessage,
  encodeMessage,
  gzipText,
  MESSAGE_MAX_INFLATED_BYTES,
  QUEUE_MESSAGE_MAX_BYTES,
} from '../../shared/queue/messages';
import { redactSecret } from '../../shared/braze/redact';
import { sentLine, shardCountFor, shardOfHash, stateLine } from '../../shared/state/deliveredState';
import { convertCell } from '../../shared/ci/dataTypes';
import { InvalidInputError, UnreadableMessageError } from '../../shared/errors';
import { noticeFor, owedNotices, owing } from '../../shared/sync/notify';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import type { RunRecord } from '../../shared/runs/runRecord';

describe('diffing a profile against what Braze last accepted', () => {
  const bits = new MembershipBits(['a', 'b']);
  const A = bits.bit('a');
  const B = bits.bit('b');
  const OTHER = bits.bit('other');
  const base = { hasPrevious: true, previousMemberships: A, currentMemberships: A, fieldsChanged: false };
  const destination = (overrides: Parameters<typeof testConfig>[0]) =>
    testConfig({
      segments: [
        { table: 'A', brazeSegmentId: 'seg-a', attribute: 'a' },
        { table: 'B', brazeSegmentId: 'seg-b', attribute: 'b' },
      ],
      ...overrides,
    }).destinations[0];
  const flags = (leaverValue: null | false) => membershipEncoding(destination({ leaverValue }), bits);
  const list = membershipEncoding(destination({ membership: { mode: 'list', attribute: 'ci_segments', whenEmpty: null, maxLength: 500 } }), bits);

  it('skips an unchanged profile', () => {
    expect(diffProfile(base, bits.syncedMask, false)).toEqual({ unchanged: true, sendFields: false, join: 0, leave: 0 });
  });
  it('sends only the membership when a profile joins another segment', () => {
    const change = diffProfile({ ...base, currentMemberships: A | B }, bits.syncedMask, false);
    expect(change).toEqual({ unchanged: false, sendFields: false, join: B, leave: 0 });
    expect(flags(null).change(change.join, change.leave, A | B)).toEqual({ b: true });
    // As a list: the whole list, in the config's order.
    expect(list.change(change.join, change.leave, A | B)).toEqual({ ci_segments: ['seg-a', 'seg-b'] });
  });
  it('clears a left segment with the leaver value and keeps the other', () => {
    const change = diffProfile({ ...base, previousMemberships: A | B }, bits.syncedMask, false);
    expect(flags(false).change(change.join, change.leave, A)).toEqual({ b: false });
    expect(list.change(change.join, change.leave, A)).toEqual({ ci_segments: ['seg-a'] });
    expect(list.change(0, A | B, 0)).toEqual({ ci_segments: null });
    expect(list.change(0, 0, A)).toEqual({});
  });
  it('writes memberships anew when the form changes, clearing what the old form left', () => {
    expect({ ...list.clearing({ mode: 'flags' }, A | B), ...list.full(B) }).toEqual({ a: null, b: null, ci_segments: ['seg-b'] });
    expect({ ...flags(null).clearing({ mode: 'list', attribute: 'ci_segments' }, A), ...flags(null).full(A) }).toEqual({ ci_segments: null, a: true });
    // A data point per membership as flags, one for a whole list.
    expect([flags(null).fullSendPoints(A | B), list.fullSendPoints(A | B), list.fullSendPoints(0)]).toEqual([2, 1, 0]);
  });
  it('sends fields when they changed, everything when new or forced', () => {
    expect(diffProfile({ ...base, fieldsChanged: true }, bits.syncedMask, false)).toMatchObject({ sendFields: true, join: 0 });
    expect(diffProfile({ ...base, hasPrevious: false }, bits.syncedMask, false)).toMatchObject({ sendFields: true, join: A });
    expect(diffProfile(base, bits.syncedMask, true)).toMatchObject({ unchanged: false, sendFields: true, join: A });
  });
  it('leaves memberships of segments the run does not sync alone', () => {
    expect(diffProfile({ ...base, previousMemberships: A | OTHER }, bits.syncedMask, false).unchanged).toBe(true);
  });
  it('fingerprints the same fields alike, and tells any changed value, type or name apart', () => {
    expect(fieldsFingerprint({ a: 1, b: 'x' })).toBe(fieldsFingerprint({ a: 1, b: 'x' }));
    expect(fieldsFingerprint({ a: 1 })).not.toBe(fieldsFingerprint({ a: 2 }));
    expect(fieldsFingerprint({ a: 1 })).not.toBe(fieldsFingerprint({ a: '1' }));
    expect(fieldsFingerprint({ a: null })).not.toBe(fieldsFingerprint({ b: null }));
  });
});

describe('state lines', () => {
  it('are exactly what JSON.stringify writes', () => {
    const state = { h: '0123456789abcdef', k: 'x:id "quoted" \\ ü', m: ['ci_a', 'seg "b"'], f: 'fedcba9876543210' };
    expect(stateLine(state)).toBe(JSON.stringify(state));
    const sent = { h: state.h, k: state.k, p: { m: state.m, f: state.f } };
    expect(sentLine(sent)).toBe(JSON.stringify(sent));
    const joiner = { h: state.h, k: 'e:a@b.co', p: null };
    expect(sentLine(joiner)).toBe(JSON.stringify(joiner));
  });
});

describe('the profile index', () => {
  it('holds a million profiles in typed arrays', () => {
    const index = new ProfileIndex();
    for (let i = 0; i < 1_000_000; i++) index.addMembership(keyHash(`x:${i}`), 1);
    expect(index.count).toBe(1_000_000);
    expect(index.bytes).toBeLessThanOrEqual(64 * 1024 * 1024);
    expect(index.get(keyHash('x:999999'))).toMatchObject({ seen: true, rows: 1, currentMemberships: 1 });
    expect(index.get(keyHash('x:1000000'))).toBeUndefined();
  });
  it('merges rows of one profile across segments, emits it once, and spots a duplicate within a segment', () => {
    const index = new ProfileIndex();
    const h = keyHash('x:1');
    index.setPrevious(h, 2, 'aaaaaaaabbbbbbbb');
    index.addMembership(h, 1);
    index.addMembership(h, 4);
    expect(index.claimRow(h, 1)).toBe(true);
    expect(index.claimRow(h, 4)).toBe(true);
    expect(index.claimRow(h, 1)).toBe(false);
    expect(index.markEmitted(h)).toBe(true);
    expect(index.markEmitted(h)).toBe(false);
    expect({ ...index.get(h) }).toEqual({
      previousMemberships: 2,
      previousFingerprint: 'aaaaaaaabbbbbbbb',
      currentMemberships: 5,
      rows: 2,
      hasPrevious: true,
      seen: true,
      emitted: true,
    });
    expect(index.sameFingerprint(h, 'aaaaaaaabbbbbbbb')).toBe(true);
    expect(index.sameFingerprint(h, 'aaaaaaaabbbbbbbc')).toBe(false);
  });
});

describe('queue messages', () => {
  const profile = (i: number) => ({
    hash: keyHash(`x:${i}`),
    identifier: { external_id: `id-${i}` },
    attributes: { first_name: `Name ${i}`, seg: true },
    rows: 1,
    source: { partition: 0, row: i + 1 },
  });

  it('round-trip as gzip+base64, with their fields named', () => {
    const message = { kind: 'brazeBatch' as const, runId: 'r-1', batchId: '0000001', deferrals: 0, profiles: [profile(1), profile(2)] };
    const text = encodeMessage(message);
    expect(text).toMatch(/^[A-Za-z0-9+/=]+$/);
    expect(decodeBatchMessage(text)).toEqual(message);
    expect(decodeBatchMessage(Buffer.from(text))).toEqual(message);
  });

  it('fit well over a thousand profiles under the 64 KiB limit', () => {
    const profiles = Array.from({ length: 1500 }, (_, i) => profile(i));
    const text = encodeMessage({ kind: 'brazeBatch', runId: 'r-1', batchId: '1', deferrals: 0, profiles });
    expect(text.length).toBeLessThan(QUEUE_MESSAGE_MAX_BYTES);
  });

  it('name what is wrong with a message that does not fit the schema, and keep what can be read of it', () => {
    const empty = encodeMessage({ kind: 'brazeBatch', runId: 'r', batchId: '1', deferrals: 0, profiles: [] } as never);
    expect(() => decodeBatchMessage(empty)).toThrow(InvalidInputError);
    expect(() => decodeBatchMessage(empty)).toThrow(/profiles: needs at least 1 item/);
    const damaged = gzipText(
      JSON.stringify({
        kind: 'brazeBatch',
        runId: 'r-1',
        batchId: '0000007',
        profiles: [
          { ...profile(1), rows: 2 },
          { hash: 'x', rows: 1 },
        ],
      }),
    );
    try {
      decodeBatchMessage(damaged);
      throw new Error('decoded');
    } catch (error) {
      expect(error).toBeInstanceOf(UnreadableMessageError);
      expect((error as UnreadableMessageError).salvage).toEqual({ runId: 'r-1', batchId: '0000007', profiles: 2, rows: 3 });
    }
    expect(() => decodeRunMessage('%%%')).toThrow(/Run message is not a readable message: not base64 text/);
  });

  it('accept one encoding only, and never inflate beyond the bound', () => {
    const message = { kind: 'startRun' as const, runId: 'r-1' };
    expect(() => decodeRunMessage(JSON.stringify(message))).toThrow(/not base64 text/);
    expect(() => decodeRunMessage(Buffer.from(JSON.stringify(message)).toString('base64'))).toThrow(/not gzip data/);
    expect(() => decodeRunMessage({ ...message })).toThrow(/expected base64 text, got object/);
    // A gzip bomb: 64 MiB of zeros compress to ~64 KiB.
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024), { level: 9 }).toString('base64');
    expect(() => decodeRunMessage(bomb)).toThrow(new RegExp(`inflates beyond ${MESSAGE_MAX_INFLATED_BYTES} bytes`));
  });
});

describe('CDM values', () => {
  it('normalise date-times to ISO 8601 UTC whichever way they are written', () => {
    expect(convertCell('2024-02-03T04:05:06Z', 'dateTime')).toEqual({ ok: true, value: '2024-02-03T04:05:06.000Z' });
    expect(convertCell('2024-02-03T06:05:06+02:00', 'dateTimeOffset')).toEqual({ ok: true, value: '2024-02-03T04:05:06.000Z' });
    // A day that does not exist is reported, never rolled into the next month.
    expect(convertCell('2024-02-30T04:05:06Z', 'dateTime')).toEqual({ ok: false, reason: 'not a date/time' });
    expect(convertCell('yesterday', 'dateTime')).toEqual({ ok: false, reason: 'not a date/time' });
  });
});

describe('redaction', () => {
  it('removes the API key, bearer tokens and key-shaped UUIDs', () => {
    expect(redactSecret('Invalid API key: s3cret-key', 's3cret-key')).toBe('Invalid API key: [redacted]');
    expect(redactSecret('Authorization: Bearer abc.def', 'x')).toBe('Authorization: Bearer [redacted]');
    expect(redactSecret('key 6f1c2b8e-1a2b-4c3d-9e8f-0a1b2c3d4e5f', '')).toBe('key [redacted]');
  });
});

describe('state shards', () => {
  it('are sized for ~100k profiles each, in powers of two, growing or shrinking at most fourfold a run', () => {
    const none = { format: 0 as const };
    expect(shardCountFor(50_000, none, 100_000)).toBe(1);
    expect(shardCountFor(1_000_000, none, 100_000)).toBe(16);
    expect(shardCountFor(10_000_000, none, 100_000)).toBe(128);
    const previous = (shards: number) => ({ format: 2 as const, manifest: { format: 2 as const, runId: 'r', shards, profiles: 0, blobs: [] } });
    expect(shardCountFor(10_000_000, previous(4), 100_000)).toBe(16);
    expect(shardCountFor(10, previous(64), 100_000)).toBe(16);
    expect(shardCountFor(1_000_000, { format: 1, blobName: 'x', profiles: 1_000_000 }, 100_000)).toBe(16);
    // PROFILES_PER_SHARD moves the size.
    expect(shardCountFor(4_000, none, 500)).toBe(8);
  });
  it('split a shard into halves that keep their profiles: shard s of 2n holds profiles of shard s mod n', () => {
    for (let i = 0; i < 1000; i++) {
      const hash = keyHash(`x:${i}`);
      expect(shardOfHash(hash, 16) & 7).toBe(shardOfHash(hash, 8));
    }
  });
});

describe('what a change of status owes, on the run record', () => {
  const config = testConfig({ notify: [{ urlSetting: 'HOOK', on: ['failed'], format: 'json' }] });
  const deps = { config, clock: { now: () => 1_000_000 } } as unknown as ConnectorDeps;
  const run = { runId: 'r1', destination: 'BrazeExport', instance: '', refreshLabel: '2026/11/28/0600' } as RunRecord;

  it('cuts a long reason, and keeps the list within what a table property holds', () => {
    // A model.json with every problem listed: its reason is the size of the file.
    const reason = 'x'.repeat(100_000);
    const notice = noticeFor(deps, run, 'failed', { connectorEvent: 'RunFailed', runId: 'r1', destination: 'BrazeExport', reason })!;
    expect(notice).toMatchObject({ event: 'failed', targets: [0] });
    expect(String(notice.summary.reason)).toHaveLength(2_001);
    let owedRun = run;
    for (let i = 0; i < 20; i++) owedRun = { ...owedRun, ...owing(owedRun, { ...notice, id: `failed-${i}` }) };
    // Under 32K characters (64 KiB): the newest kept, the oldest let go.
    expect(owedRun.owedNotices!.length).toBeLessThan(24_000);
    const kept = owedNotices(owedRun);
    expect(kept.length).toBeGreaterThan(1);
    expect(kept[kept.length - 1].id).toBe('failed-19');
  });

  it('owes the record even when no webhook asked for the event, and reads a damaged list as nothing owed', () => {
    const notice = noticeFor(deps, run, 'halted', { connectorEvent: 'RunHalted', runId: 'r1', destination: 'BrazeExport', brazeStatus: 401, reason: 'r' });
    expect(notice).toMatchObject({ event: 'halted', targets: [] });
    expect(noticeFor(deps, run, 'completed', { connectorEvent: 'RunExpired', runId: 'r1', destination: 'BrazeExport' })).toBeUndefined();
    const warnings: string[] = [];
    expect(owedNotices({ runId: 'r1', owedNotices: '[{"id":1}]' }, { warn: (m: string) => warnings.push(m) } as unknown as ConnectorDeps['log'])).toEqual([]);
    expect(warnings).toEqual(['run r1: its owed notifications do not read; dropped']);
  });
});
