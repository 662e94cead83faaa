/**
 * The Node arguments of a worker whose memory is bounded: what the template writes for
 * NODE_MAX_OLD_SPACE_MB (infra/main.bicep, languageWorkers__node__arguments), which the infra test
 * holds equal, so the peak RSS the bench measures is the one a bounded deployment sees. The young
 * generation is capped too: V8's default semi-space (16 MB) let the heap's total run ~40 MB above
 * what an 8-MB one does at the same live data, for GC work within the runs' spread.
 */
export function boundedWorkerNodeArgs(maxOldSpaceMB: number): string {
  return `--max-old-space-size=${maxOldSpaceMB} --max-semi-space-size=8`;
}

/** The bench's workers: the heap bound the README recommends for up to 1M profiles a destination. */
export const BENCH_WORKER_NODE_ARGS = boundedWorkerNodeArgs(192);
