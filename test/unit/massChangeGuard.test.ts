import { DEFAULT_GUARD, parseSyncConfig } from '../../shared/config/syncConfig';
import { guardVerdict, type RunChange } from '../../shared/sync/massChangeGuard';
import { isTerminal, runStatuses, statusAfter } from '../../shared/runs/runRecord';

const change = (segments: RunChange['segments'], profilesSent = 0, profilesBefore = 1000, force = false): RunChange => ({
  segments,
  profilesSent,
  profilesBefore,
  force,
});

describe('the guard against mass change', () => {
  it('holds a run that clears more than the share of a segment, naming the segment and the counts', () => {
    expect(guardVerdict(DEFAULT_GUARD, change({ ci_high_value: { members: 1576, cleared: 1421 } }))).toEqual([
      'ci_high_value: 1421 of its 1576 members would be cleared (90.2%; the guard allows 20%)',
    ]);
  });
  it('lets a run clear up to the share, and a small segment move by whole members', () => {
    expect(guardVerdict(DEFAULT_GUARD, change({ a: { members: 1000, cleared: 200 } }))).toEqual([]);
    // 9 of 10 members is 90%, but fewer than minProfiles (10): no alarm.
    expect(guardVerdict(DEFAULT_GUARD, change({ a: { members: 10, cleared: 9 } }))).toEqual([]);
    expect(guardVerdict({ ...DEFAULT_GUARD, minProfiles: 0 }, change({ a: { members: 10, cleared: 9 } }))).toHaveLength(1);
  });
  it('judges every segment on its own', () => {
    const reasons = guardVerdict(DEFAULT_GUARD, change({ a: { members: 100, cleared: 50 }, b: { members: 100, cleared: 5 }, c: { members: 40, cleared: 40 } }));
    expect(reasons.map((r) => r.split(':')[0])).toEqual(['a', 'c']);
  });
  it('holds a run that changes more than the share of all profiles only when that limit is set, and never a forced run for it', () => {
    expect(guardVerdict(DEFAULT_GUARD, change({}, 1000))).toEqual([]);
    const guard = { ...DEFAULT_GUARD, maxChangedShare: 0.5 };
    expect(guardVerdict(guard, change({}, 501))).toEqual([
      '501 profiles would change, 50.1% of the 1000 Braze holds for this destination (the guard allows 50%)',
    ]);
    expect(guardVerdict(guard, change({}, 500))).toEqual([]);
    expect(guardVerdict(guard, change({}, 1000, 1000, true))).toEqual([]);
    // A forced run still may not clear a segment.
    expect(guardVerdict(guard, change({ a: { members: 100, cleared: 90 } }, 1000, 1000, true))).toHaveLength(1);
  });
  it('holds a run that would delete more users than the guard allows, however few profiles change', () => {
    expect(guardVerdict(DEFAULT_GUARD, { ...change({}), erasing: 101 })).toEqual([
      '101 users would be deleted from Braze, which cannot be undone (the guard allows 100 a run)',
    ]);
    expect(guardVerdict(DEFAULT_GUARD, { ...change({}), erasing: 100 })).toEqual([]);
    expect(guardVerdict({ ...DEFAULT_GUARD, maxErasures: null }, { ...change({}), erasing: 10_000 })).toEqual([]);
  });
  it('is off where a share is null', () => {
    expect(
      guardVerdict({ maxClearedShare: null, maxChangedShare: null, minProfiles: 0, maxErasures: null }, change({ a: { members: 10, cleared: 10 } }, 10, 10)),
    ).toEqual([]);
  });
  it('is set per destination in the mapping config, with defaults, and a bad share is named', () => {
    const base = { name: 'D', segments: [{ table: 'T', brazeSegmentId: 's' }], matching: { emailColumn: 'EMail' } };
    expect(parseSyncConfig(JSON.stringify({ destinations: [base] }), 'test').destinations[0].guard).toEqual(DEFAULT_GUARD);
    const set = parseSyncConfig(JSON.stringify({ destinations: [{ ...base, guard: { maxClearedShare: null, maxChangedShare: 0.3 } }] }), 'test');
    expect(set.destinations[0].guard).toEqual({ maxClearedShare: null, maxChangedShare: 0.3, minProfiles: 10, maxErasures: 100 });
    expect(() => parseSyncConfig(JSON.stringify({ destinations: [{ ...base, guard: { maxClearedShare: 20 } }] }), 'test')).toThrow(
      /destinations\.0\.guard\.maxClearedShare/,
    );
    expect(() => parseSyncConfig(JSON.stringify({ destinations: [{ ...base, guard: { maxClearShare: 0.2 } }] }), 'test')).toThrow(/maxClearShare/);
  });
  it('holds a run only from its reading; a held run is approved, cancelled or superseded, and only cancelled ends it', () => {
    expect(runStatuses.filter((s) => statusAfter(s, 'hold'))).toEqual(['enqueuing']);
    expect(statusAfter('held', 'approve')).toBe('enqueuing');
    expect(statusAfter('held', 'cancel')).toBe('cancelled');
    expect(statusAfter('held', 'supersede')).toBe('superseded');
    expect(statusAfter('held', 'enqueueDone')).toBeUndefined();
    expect(statusAfter('held', 'startFinalize')).toBeUndefined();
    expect(isTerminal('held')).toBe(false);
    expect(isTerminal('cancelled')).toBe(true);
    expect(runStatuses.filter((s) => statusAfter(s, 'approve'))).toEqual(['held']);
  });
});
