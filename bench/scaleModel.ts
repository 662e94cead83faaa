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
 * its own core. Map steps run in waves over the partitions (the export keeps the measured
 * partition size), diff steps in waves over the shards; sending overlaps the diff steps (batches
 * go out as shards enqueue them) and is bounded by the senders' CPU, Braze's limit and the
 * queue's throughput, whichever is slowest.
 */
export function project(costs: MeasuredCosts, platform: Platform, profiles: number, instances: number): Projection {
  const rows = profiles * costs.rowsPerProfile;
  const partitions = Math.max(1, Math.ceil(rows / costs.rowsPerPartition));
  // The planner's own rule (a first sync: no previous state to stay near).
  const shards = shardCountFor(profiles, FIRST_SYNC, PROFILES_PER_SHARD);
  const mapSeconds = Math.ceil(partitions / instances) * Math.min(rows, costs.rowsPerPartition) * costs.mapSecondsPerRow;
  const diffSeconds = Math.ceil(shards / instances) * (profiles / shards) * costs.diffSecondsPerProfile;
  const requests = profiles * costs.requestsPerProfile;
  const senders = (requests * costs.sendSecondsPerRequest) / instances;
  const brazeFloorSeconds = requests / platform.brazeRequestsPerSecond;
  const queue = requests / costs.requestsPerMessage / platform.queueMessagesPerSecond;
  const sendSeconds = Math.max(senders, brazeFloorSeconds, queue);
  const hopSeconds = platform.hops * platform.hopSeconds;
  const seconds = hopSeconds + mapSeconds + Math.max(diffSeconds, sendSeconds);
  const parts: [string, number][] = [
    ['CPU: map steps', mapSeconds],
    [
      diffSeconds >= sendSeconds
        ? 'CPU: diff steps'
        : senders >= Math.max(brazeFloorSeconds, queue)
          ? 'CPU: senders'
          : brazeFloorSeconds >= queue
            ? 'Braze rate limit'
            : 'queue throughput',
      Math.max(diffSeconds, sendSeconds),
    ],
    ['queue hops', hopSeconds],
  ];
  const boundBy = parts.reduce((a, b) => (b[1] > a[1] ? b : a))[0];
  return { profiles, instances, seconds, mapSeconds, diffSeconds, sendSeconds, hopSeconds, brazeFloorSeconds, boundBy };
}
