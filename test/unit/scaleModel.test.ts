import { FLEX_CONSUMPTION, project, type MeasuredCosts } from '../../bench/scaleModel';

const costs: MeasuredCosts = {
  rowsPerProfile: 1.4,
  rowsPerPartition: 175_000,
  mapSecondsPerRow: 20e-6,
  diffSecondsPerProfile: 50e-6,
  requestsPerProfile: 1 / 75,
  requestsPerMessage: 15,
  sendSecondsPerRequest: 2e-3,
};

describe('the scale model', () => {
  it('on one instance adds hops, map steps, diff steps and sending: they share its core', () => {
    const p = project(costs, FLEX_CONSUMPTION, 1_000_000, 1);
    // 8 partitions of 175,000 rows, one at a time; 16 shards of 62,500 profiles.
    expect(p.mapSeconds).toBeCloseTo(8 * 175_000 * 20e-6, 6);
    expect(p.diffSeconds).toBeCloseTo(16 * 62_500 * 50e-6, 6);
    expect(p.brazeFloorSeconds).toBeCloseTo(1_000_000 / 75 / 1_000, 6);
    expect(p.sendSeconds).toBeCloseTo((1_000_000 / 75) * 2e-3, 6);
    expect(p.seconds).toBeCloseTo(10 + p.mapSeconds + p.diffSeconds + p.sendSeconds, 6);
    expect(p.boundBy).toBe('CPU: diff steps and senders');
  });

  it('is bound by Braze once enough instances share the work, and never beats its limit', () => {
    const p = project(costs, FLEX_CONSUMPTION, 10_000_000, 100);
    expect(p.boundBy).toBe('Braze rate limit');
    expect(p.seconds).toBeCloseTo(p.hopSeconds + p.mapSeconds + p.brazeFloorSeconds, 6);
    expect(p.sendSeconds).toBeLessThan(p.brazeFloorSeconds);
  });

  it('spreads no step finer than one partition or one shard', () => {
    const few = project(costs, FLEX_CONSUMPTION, 1_000_000, 16);
    const many = project(costs, FLEX_CONSUMPTION, 1_000_000, 1_000);
    expect(many.mapSeconds).toBe(few.mapSeconds);
    expect(many.diffSeconds).toBe(few.diffSeconds);
  });
});
