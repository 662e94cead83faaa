import { readFileSync } from 'node:fs';

/** What V8's profiler writes (Profiler.stop, or `--cpu-prof`): a call tree and timed samples. */
interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

/**
 * The stages of a refresh, each found by the code a sample runs in. A sample belongs to the
 * innermost frame of its stack that a rule names: csv-parse called from a map step is parsing,
 * the map step's own code around it is routing. Libraries under our code (the Azure SDK, axios,
 * Node's streams and sockets) name no stage of their own: their time goes to the code of ours that
 * called them, and only to the fallbacks when no frame of ours is on the stack (a socket's data
 * handler, a timer) — time a CPU profile cannot give to one stage.
 */
const STAGE_RULES: [stage: string, test: RegExp][] = [
  ['GC', /^\(garbage collector\)$/],
  ['idle', /^\(idle\)$/],
  ['parse CSV (csv-parse)', /node_modules\/csv-parse\//],
  ['hash (md5, FNV)', /node:internal\/crypto|shared\/mapping\/fieldHashes\.js|shared\/state\/profileIndex\.js/],
  ['compression (zlib)', /node:zlib|node:internal\/zlib/],
  ['read partition (decode, line tracking)', /shared\/ci\/partitionReader\.js|shared\/reader\/openPartition\.js|iconv-lite/],
  ['map line encode/decode', /shared\/reader\/mapLines\.js/],
  ['map step: route rows', /shared\/reader\/mapPartition\.js/],
  ['blob writes (staged blocks, logs)', /shared\/storage\/(stagedBlobWriter|blobLineWriter)\.js/],
  ['state read/write', /shared\/state\/(deliveredState|membershipBits|membershipEncoding)\.js/],
  ['map to Braze object', /shared\/mapping\/|shared\/ci\/dataTypes\.js/],
  ['diff step', /shared\/reader\/diffShard\.js|shared\/state\/diff\.js/],
  ['pack/encode batches', /shared\/queue\/(batchPacker|messages)\.js/],
  ['queue send/receive', /shared\/storage\/queueSend\.js|local\/queueHost\.js/],
  ['table reads/writes (runs, ledgers)', /shared\/runs\//],
  ['HTTP send to Braze (sender, axios)', /shared\/batches\/|shared\/braze\//],
  ['step control (claims, slots, run)', /shared\/sync\/|shared\/storage\/|shared\/reader\/|shared\/ci\//],
];

/** Where a sample goes when no frame of ours is on its stack. */
const FALLBACK_RULES: [stage: string, test: RegExp][] = [
  ['Azure SDK, no caller of ours on the stack', /@azure\/|@typespec\//],
  ['axios, no caller of ours on the stack', /node_modules\/axios\//],
  ['Node HTTP, sockets, streams, timers (no caller of ours)', /^node:/],
];

const OTHER = 'other (V8 runtime, native code)';

/** Self time per stage, in milliseconds, of one or more profiles (idle left out). */
export function stageTimes(files: string[]): Map<string, number> {
  const times = new Map<string, number>();
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    const parent = new Map<number, number>();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
    const stageOfNode = new Map<number, string>();
    const stageOf = (id: number): string => {
      const known = stageOfNode.get(id);
      if (known) return known;
      let stage: string | undefined;
      let fallback: string | undefined;
      for (let at: number | undefined = id; at !== undefined && !stage; at = parent.get(at)) {
        const { functionName, url } = byId.get(at)!.callFrame;
        stage = STAGE_RULES.find(([, test]) => test.test(url) || (!url && test.test(functionName)))?.[0];
        fallback ??= FALLBACK_RULES.find(([, test]) => test.test(url))?.[0];
      }
      stage ??= fallback ?? OTHER;
      stageOfNode.set(id, stage);
      return stage;
    };
    for (let i = 0; i < profile.samples.length; i++) {
      const stage = stageOf(profile.samples[i]);
      times.set(stage, (times.get(stage) ?? 0) + profile.timeDeltas[i] / 1000);
    }
  }
  times.delete('idle');
  return times;
}

/** The stages as table rows, largest first: stage, milliseconds, share, microseconds per input row. */
export function stageTable(times: Map<string, number>, rows: number): { stage: string; ms: number; share: number; microsPerRow: number }[] {
  const total = [...times.values()].reduce((a, b) => a + b, 0);
  return [...times.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([stage, ms]) => ({ stage, ms: Math.round(ms), share: Math.round((1000 * ms) / total) / 10, microsPerRow: Math.round((10_000 * ms) / rows) / 10 }));
}

/** `node dist/bench/profileStages.js ROWS FILE...`: the table of profiles written elsewhere. */
if (require.main === module) {
  const [rows, ...files] = process.argv.slice(2);
  for (const row of stageTable(stageTimes(files), Number(rows)))
    console.log(`${String(row.ms).padStart(8)} ms ${String(row.share).padStart(5)}% ${String(row.microsPerRow).padStart(6)} µs/row  ${row.stage}`);
}
