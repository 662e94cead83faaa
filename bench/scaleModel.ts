import { shardCountFor, type PreviousState } from '../shared/state/deliveredState';

/** The planner's default shard size (PROFILES_PER_SHARD). */
const PROFILES_PER_SHARD = 100_000;
const FIRST_SYNC: PreviousState = { format: 0 };

/**
 * A scale model of a refresh: from the costs one benchmark run measured, the wall time of a
 * refresh of any size on any number of instances, and the resource that bounds it. It is
 * arithmetic on measured figures, not a simulation; its assumptions are stated where they are
 * made, and docs/benchmarks.md says where it stops holding.
 */

/** What one run measured, per unit of work. */
export interface MeasuredCosts {
  /** Input rows per profile (a profile in two segments is two rows). */
  rowsPerProfile: number;
  /** Rows in one partition file of the measured export. */
  rowsPerPartition: number;
  /** Seconds of map-step work per input row (parse, route, write map lines). */
  mapSecondsPerRow: number;
  /** Seconds of diff-step work per profile (read lines and state, diff, map, pack, enqueue). */
  diffSecondsPerProfile: number;
  /** Braze /users/track requests per profile sent. */
  requestsPerProfile: number;
  /** Braze requests one queue message carries. */
  requestsPerMessage: number;
  /** Connector CPU seconds per Braze request outside the reading steps (sender, ledgers, finalize). */
  sendSecondsPerRequest: number;
}

export interface Platform {
  name: string;
  /** Wait per queue hop: an idle instance polls a queue at most every maxPollingInterval. */
  hopSeconds: number;
  /** Hops on a refresh's critical path: start → map steps → diff steps → batches → finalize. */
  hops: number;
  /** Braze's /users/track limit, requests per second (3,000 per 3 s). */
  brazeRequestsPerSecond: number;
  /** Azure Queue Storage: up to 2,000 messages per second per queue (scalability targets). */
  queueMessagesPerSecond: number;
}

export const FLEX_CONSUMPTION: Platform = {
  name: 'Flex Consumption',
  // host.json's maxPollingInterval: what a hop costs when the instance that takes it was idle.
  hopSeconds: 2,
  hops: 5,
  brazeRequestsPerSecond: 1_000,
  queueMessagesPerSecond: 2_000,
};

export interface Projection {
  profiles: number;
  instances: number;
  seconds: number;
  mapSeconds: number;
  diffSeconds: number;
  sendSeconds: number;
  hopSeconds: number;
  brazeFloorSeconds: number;
  /** What the longest part of the critical path waits on. */
  boundBy: string;
}

/**
 * A first sync of `profiles` on `instances` instances, each running one reading step at a time on
 * a core of its own. Map steps run in waves over the partitions (the export keeps the measured
 * partition size). Diff steps and sending overlap (batches go out as shards enqueue them) and
 * share the instances' cores, so that part takes the longest of: the diff steps in waves over the
 * shards, the diff steps' and the senders' CPU together spread over the instances, Braze's limit,
 * and the queue's throughput.
 */
export function project(costs: MeasuredCosts, platform: Platform, profiles: number, instances: number): Projection {
  const rows = profiles * costs.rowsPerProfile;
  const partitions = Math.max(1, Math.ceil(rows / costs.rowsPerPartition));
  // The planner's own rule (a first sync: no previous state to stay near).
  const shards = shardCountFor(profiles, FIRST_SYNC, PROFILES_PER_SHARD);
  const mapSeconds = Math.ceil(partitions / instances) * Math.min(rows, costs.rowsPerPartition) * costs.mapSecondsPerRow;
  const diffWork = profiles * costs.diffSecondsPerProfile;
  const diffSeconds = Math.ceil(shards / instances) * (diffWork / shards);
  const requests = profiles * costs.requestsPerProfile;
  const sendWork = requests * costs.sendSecondsPerRequest;
  const sendSeconds = sendWork / instances;
  const cpuSeconds = (diffWork + sendWork) / instances;
  const brazeFloorSeconds = requests / platform.brazeRequestsPerSecond;
  const queueSeconds = requests / costs.requestsPerMessage / platform.queueMessagesPerSecond;
  const hopSeconds = platform.hops * platform.hopSeconds;
  const [tailBound, tailSeconds] = (
    [
      ['CPU: diff steps (one shard per instance at a time)', diffSeconds],
      ['CPU: diff steps and senders', cpuSeconds],
      ['Braze rate limit', brazeFloorSeconds],
      ['queue throughput', queueSeconds],
    ] as [string, number][]
  ).reduce((a, b) => (b[1] > a[1] ? b : a));
  const seconds = hopSeconds + mapSeconds + tailSeconds;
  const boundBy = (
    [
      ['CPU: map steps', mapSeconds],
      [tailBound, tailSeconds],
      ['queue hops', hopSeconds],
    ] as [string, number][]
  ).reduce((a, b) => (b[1] > a[1] ? b : a))[0];
  return { profiles, instances, seconds, mapSeconds, diffSeconds, sendSeconds, hopSeconds, brazeFloorSeconds, boundBy };
}
