import fc from 'fast-check';
import { changedAttributes, fieldHashes, fnv1a32 } from '../../shared/mapping/fieldHashes';
import { ReaderSlots } from '../../shared/sync/readerSlots';
import { canMove, onReceipt, type BatchRecord } from '../../shared/runs/batchRecord';
import { runCountsSchema, runStatuses, runTransitions, statusAfter, type RunRecord } from '../../shared/runs/runRecord';
import { emptyOutcome } from '../../shared/runs/runTable';
import { isRunComplete } from '../../shared/sync/finalizeRun';

describe('run statuses move only along the transition table', () => {
  it('keeps a halt when the enqueue ends, and a finished run when a late event arrives', () => {
    expect(statusAfter('enqueuing', 'enqueueDone')).toBe('sending');
    expect(statusAfter('halted', 'enqueueDone')).toBeUndefined();
    expect(statusAfter('superseded', 'enqueueDone')).toBeUndefined();
    expect(statusAfter('completed', 'halt')).toBeUndefined();
    expect(statusAfter('failed', 'resume')).toBeUndefined();
    expect(statusAfter('superseded', 'resume')).toBeUndefined();
  });
  it('lets only runs that cannot finish by themselves, wait for a person, or have not started, be superseded', () => {
    const supersedable = runStatuses.filter((s) => statusAfter(s, 'supersede'));
    expect(supersedable.sort()).toEqual(['halted', 'held', 'queued', 'stalled']);
  });
  it('marks only a sending run stalled, and a resume or a finalize gets it out', () => {
    expect(runStatuses.filter((s) => statusAfter(s, 'stall'))).toEqual(['sending']);
    expect(statusAfter('stalled', 'resume')).toBe('sending');
    expect(statusAfter('stalled', 'startFinalize')).toBe('finalizing');
  });
  it('never leaves failed, superseded or cancelled', () => {
    for (const event of Object.keys(runTransitions) as (keyof typeof runTransitions)[]) {
      expect(statusAfter('failed', event)).toBeUndefined();
      expect(statusAfter('superseded', event)).toBeUndefined();
      expect(statusAfter('cancelled', event)).toBeUndefined();
    }
  });
});

describe('run completion is exact', () => {
  const run = (counts: Partial<RunRecord>): RunRecord => ({ ...runCountsSchema.parse({}), enqueueDone: true, usersEnqueued: 10, ...counts }) as RunRecord;
  it('needs every profile ended once, none parked, and the enqueue done', () => {
    expect(isRunComplete(run({ usersDelivered: 7, usersRejected: 2, usersFailed: 1 }))).toBe(true);
    expect(isRunComplete(run({ usersDelivered: 9 }))).toBe(false);
    expect(isRunComplete(run({ usersDelivered: 10, enqueueDone: false }))).toBe(false);
    expect(isRunComplete(run({ usersDelivered: 9, usersParked: 1 }))).toBe(false);
  });
  it('does not take a count above what was enqueued (a batch counted twice) for completion', () => {
    expect(isRunComplete(run({ usersDelivered: 12 }))).toBe(false);
  });
});

describe('what a delivery does with the batch record it finds', () => {
  const now = Date.parse('2026-11-29T10:00:00Z');
  const record = (state: BatchRecord['state'], claimUntil = '2026-11-29T10:05:00Z'): BatchRecord => ({
    state,
    owner: 'aaaaaaaaaaaa',
    claimUntil,
    outcome: emptyOutcome(),
  });
  it('claims a new batch, and one whose owner let the claim run out', () => {
    expect(onReceipt(undefined, { resumed: false }, now)).toEqual({ kind: 'claim' });
    expect(onReceipt(record('sending', '2026-11-29T09:59:59Z'), { resumed: false }, now)).toEqual({ kind: 'claim' });
  });
  it('waits for a live claim, finishes a recorded hand-off, and ignores a settled batch', () => {
    expect(onReceipt(record('sending'), { resumed: false }, now)).toEqual({ kind: 'busy', untilMs: Date.parse('2026-11-29T10:05:00Z') });
    expect(onReceipt(record('handingOff'), { resumed: true }, now)).toEqual({ kind: 'finishHandoff' });
    expect(onReceipt(record('settled'), { resumed: true }, now)).toEqual({ kind: 'duplicate' });
  });
  it('reopens a parked or failed batch only for a resume', () => {
    for (const state of ['parked', 'failed'] as const) {
      expect(onReceipt(record(state), { resumed: false }, now)).toEqual({ kind: 'duplicate' });
      expect(onReceipt(record(state), { resumed: true }, now)).toEqual({ kind: 'claim' });
    }
  });
  it('moves a batch only along its transitions', () => {
    expect(canMove('new', 'sending')).toBe(true);
    expect(canMove('new', 'settled')).toBe(false);
    expect(canMove('settled', 'sending')).toBe(false);
    expect(canMove('handingOff', 'failed')).toBe(false);
    expect(canMove('parked', 'sending')).toBe(true);
  });
});

describe('reader slots', () => {
  const clock = { now: () => Date.now(), sleep: (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)) };
  it('let one step read at a time: the next waits for the slot, and one that waits too long is told to go elsewhere', async () => {
    const slots = new ReaderSlots(1, clock);
    const first = await slots.take();
    expect(first).toBeDefined();
    const second = slots.take(1_000);
    expect(await slots.take(20)).toBeUndefined();
    first!();
    first!(); // releasing twice frees one slot only
    const got = await second;
    expect(got).toBeDefined();
    expect(await slots.take(20)).toBeUndefined();
    got!();
    expect(await slots.take(20)).toBeDefined();
  });
});

describe('per-field hashes for a preview', () => {
  const names = ['email', 'first_name', 'loyalty_points'];
  it('name the attributes whose values differ, and every present one when there is nothing to compare with', () => {
    const before = fieldHashes(names, { email: 'a@example.com', first_name: 'Ana', loyalty_points: 10 });
    const after = fieldHashes(names, { email: 'a@example.com', first_name: 'Ana', loyalty_points: 11 });
    expect(before).toMatch(/^[0-9a-f]{24}$/);
    expect(changedAttributes(names, after, before)).toEqual(['loyalty_points']);
    expect(changedAttributes(names, before, before)).toEqual([]);
    // A field that appears or goes (dropped as invalid, or null now) is a change.
    const withoutName = fieldHashes(names, { email: 'a@example.com', loyalty_points: 10 });
    expect(changedAttributes(names, withoutName, before)).toEqual(['first_name']);
    // New profile, or a state from before field hashes: every present attribute counts.
    expect(changedAttributes(names, withoutName, undefined)).toEqual(['email', 'loyalty_points']);
    expect(changedAttributes(names, after, 'abc')).toEqual(names);
    // null and "" and 0 are different values.
    expect(new Set([fieldHashes(['x'], { x: null }), fieldHashes(['x'], { x: '' }), fieldHashes(['x'], { x: 0 })]).size).toBe(3);
  });

  it('hash a value as the FNV-1a of its JSON text, whatever path computes it (states written before keep matching)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'binary' }), fc.string(), fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string())),
        (value) => {
          expect(fieldHashes(['x'], { x: value })).toBe(fnv1a32(JSON.stringify(value)));
        },
      ),
      { numRuns: 2_000 },
    );
  });
});
