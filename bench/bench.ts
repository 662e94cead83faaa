import '../local/quietTestMode';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import axios from 'axios';
import { parse } from 'csv-parse';
import type { ContainerClient } from '@azure/storage-blob';
import { startAzurite } from '../local/azurite';
import { createConnector, ensureReady } from '../shared/sync/connector';
import type { ConnectorDeps } from '../shared/runs/connectorDeps';
import { requestSync } from '../shared/sync/startSync';
import { silentLogger } from '../shared/log';
import type { RunRecord } from '../shared/runs/runRecord';
import { DEFAULT_GUARD, type SyncConfig } from '../shared/config/syncConfig';
import { csvFormatOf, csvParserOptions } from '../shared/ci/partitionReader';
import { stageTable, stageTimes } from './profileStages';
import { FLEX_CONSUMPTION, project, type MeasuredCosts, type Platform } from './scaleModel';
import { BENCH_WORKER_NODE_ARGS } from './workerNodeArgs';

const ROOT = path.resolve(__dirname, '..', '..');
const INSTANCE = 'CustomerInsights_bench0001';
const DESTINATION = 'BrazeExport';
const API_KEY = 'bench-key';
const COLUMNS = [
  { name: 'CustomerId', dataType: 'GUID' },
  { name: 'EMail', dataType: 'string' },
  { name: 'FirstName', dataType: 'string' },
  { name: 'LastName', dataType: 'string' },
  { name: 'LoyaltyPoints', dataType: 'int64' },
  { name: 'LastPurchaseDate', dataType: 'dateTime' },
];
const SEGMENTS = ['HighValue', 'Newsletter'] as const;
const BENCH_STARTED = Date.now();

const config: SyncConfig = {
  workspaces: {},
  destinations: [
    {
      name: DESTINATION,
      segments: [
        { table: 'HighValue', brazeSegmentId: 'seg-high-value', attribute: 'ci_high_value' },
        { table: 'Newsletter', brazeSegmentId: 'ci_newsletter' },
      ],
      matching: {
        emailColumn: 'EMail',
        customerIdColumn: 'CustomerId',
        customerIdIsExternalId: true,
        fallbackIdentifiers: ['email', 'user_alias'],
        aliasLabel: 'ci_customer_id',
      },
      fields: { FirstName: 'first_name', LastName: 'last_name', LoyaltyPoints: 'loyalty_points', LastPurchaseDate: 'last_purchase_at' },
      subscriptions: [],
      membership: { mode: 'flags' },
      notify: [],
      guard: { ...DEFAULT_GUARD },
      leaverValue: null,
      dryRun: false,
    },
  ],
};

/** Segment membership of profile i: ~70% HighValue, ~50% Newsletter, everyone in at least one. */
function segmentsOf(i: number): (typeof SEGMENTS)[number][] {
  const hv = i % 10 < 7;
  const nl = i % 2 === 0;
  if (!hv && !nl) return ['HighValue'];
  return [...(hv ? ['HighValue' as const] : []), ...(nl ? ['Newsletter' as const] : [])];
}

function customerId(i: number): string {
  return `5f1e9c6a-3b7d-4e2a-9c1f-${i.toString(16).padStart(12, '0')}`;
}

function rowOf(i: number, changed: boolean): string {
  const points = (i % 5000) + (changed ? 100_000 : 0);
  return `"${customerId(i)}","user${i}@example.com","First${i % 997}","Last${i % 1009}","${points}","2026-${String((i % 12) + 1).padStart(2, '0')}-15T10:00:00Z"\n`;
}

/** Streams a CI-style export into Azurite: headerless CSV partitions per segment, model.json last. */
async function writeExport(
  container: ContainerClient,
  profiles: number,
  partitions: number,
  runFolder: string,
  changedShare: number,
): Promise<{ rows: number; bytes: number }> {
  let rows = 0;
  let bytes = 0;
  const entities = [];
  for (const segment of SEGMENTS) {
    const locations = [];
    for (let p = 0; p < partitions; p++) {
      const name = `${INSTANCE}/${DESTINATION}/${segment}/${runFolder}/${segment}_${p + 1}.csv`;
      function* lines() {
        let chunk = '';
        for (let i = p; i < profiles; i += partitions) {
          if (!segmentsOf(i).includes(segment)) continue;
          // A deterministic ~changedShare of profiles get a new value in this refresh.
          const changed = changedShare > 0 && (i * 2654435761) % 1000 < changedShare * 1000;
          chunk += rowOf(i, changed);
          rows += 1;
          if (chunk.length > 256 * 1024) {
            bytes += chunk.length;
            yield Buffer.from(chunk);
            chunk = '';
          }
        }
        bytes += chunk.length;
        if (chunk) yield Buffer.from(chunk);
      }
      await container.getBlockBlobClient(name).uploadStream(Readable.from(lines()), 4 * 1024 * 1024, 4);
      locations.push({ name: `${segment}_${p + 1}`, refreshTime: new Date().toISOString(), location: `${container.url}/${name}` });
    }
    entities.push({ $type: 'LocalEntity', name: segment, attributes: COLUMNS, partitions: locations });
  }
  const model = JSON.stringify({ name: DESTINATION, version: '1.0', entities });
  await container.getBlockBlobClient(`${INSTANCE}/${DESTINATION}/model.json`).upload(model, model.length);
  return { rows, bytes };
}

interface ProcessStats {
  peakRssMb: number;
  cpuSeconds: number;
}

const CLOCK_TICKS = 100;
function processStats(pid: number): ProcessStats {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpu = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  return { peakRssMb: Math.round(hwm / 1024), cpuSeconds: Math.round(cpu * 10) / 10 };
}

interface BrazeStats {
  requests: number;
  byStatus: Record<string, number>;
  objectsApplied: number;
  firstRequestAtMs?: number;
  lastRequestAtMs?: number;
  maxPerWindow: number;
}

async function brazeStats(url: string): Promise<BrazeStats> {
  return (await axios.get<BrazeStats>(`${url}/__stats`)).data;
}

function startChild(script: string, env: NodeJS.ProcessEnv, ready: RegExp): Promise<{ child: ChildProcess; firstLine: string }> {
  // BENCH_CPU_PROF=DIR writes a V8 CPU profile of each child process (to find where time goes).
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  // The workers run with the heap bound the README recommends for up to 1M profiles (in Azure:
  // languageWorkers__node__arguments); BENCH_WORKER_NODE_ARGS overrides it, "" for V8's default.
  const workerNodeArgs = process.env.BENCH_WORKER_NODE_ARGS ?? BENCH_WORKER_NODE_ARGS;
  const workerArgs = script.includes('worker') && workerNodeArgs ? workerNodeArgs.split(' ').filter(Boolean) : [];
  // Workers get an IPC channel: --cpu-profile asks them to profile each refresh apart.
  const child = spawn(process.execPath, [...profile, ...workerArgs, path.join(ROOT, 'dist', script)], { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split('\n').find((l) => ready.test(l));
      if (line) resolve({ child, firstLine: line.trim() });
    });
    child.stderr!.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    // BENCH_VERBOSE=1: the children's log lines on stderr, each with the seconds since the bench started (a timeline of steps).
    if (process.env.BENCH_VERBOSE)
      child.stdout!.on('data', (chunk: Buffer) => {
        const at = ((Date.now() - BENCH_STARTED) / 1000).toFixed(2).padStart(8);
        for (const line of chunk.toString().split('\n')) if (line) process.stderr.write(`${at} [${child.pid}] ${line}\n`);
      });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}: ${out}`)));
  });
}

/** Asks every worker to start, or to stop and write, a V8 CPU profile; resolves when all have. */
async function profileWorkers(workers: ChildProcess[], action: 'start' | 'stop', dir: string, label: string): Promise<string[]> {
  return Promise.all(
    workers.map(
      (worker, i) =>
        new Promise<string>((resolve) => {
          const file = path.join(dir, `${label}.worker${i}.cpuprofile`);
          const answered = (message: { cpuProfileStarted?: boolean; cpuProfileWritten?: string }) => {
            if (!message.cpuProfileStarted && !message.cpuProfileWritten) return;
            worker.off('message', answered);
            resolve(file);
          };
          worker.on('message', answered);
          worker.send(action === 'start' ? { cpuProfile: 'start' } : { cpuProfile: 'stop', file });
        }),
    ),
  );
}

async function syncAndWait(
  deps: ConnectorDeps,
  sample?: () => Promise<void>,
): Promise<{ run: RunRecord; seconds: number; startedMs: number; endedMs: number }> {
  const started = Date.now();
  const outcome = await requestSync(deps, { trigger: 'http' });
  if (outcome.runs.length !== 1) throw new Error(`expected one run: ${JSON.stringify(outcome)}`);
  const runId = outcome.runs[0].runId;
  for (;;) {
    const run = (await deps.runs.get(runId))!;
    if (run.status === 'completed' || run.status === 'failed' || run.status === 'halted') {
      if (run.status !== 'completed') throw new Error(`run ${runId} ended ${run.status}: ${run.error}`);
      return { run, seconds: (Date.now() - started) / 1000, startedMs: started, endedMs: Date.now() };
    }
    // Polling is cheap but not free (each read is a storage call): four times a second is enough.
    await new Promise((r) => setTimeout(r, 250));
    await sample?.();
  }
}

/** The naive way, for comparison: stream each CSV and POST every 75 rows, one request at a time. */
async function naiveBaseline(container: ContainerClient, brazeUrl: string, runFolder: string): Promise<{ seconds: number; requests: number }> {
  const client = axios.create({
    baseURL: brazeUrl,
    httpAgent: new http.Agent({ keepAlive: true }),
    headers: { Authorization: `Bearer ${API_KEY}` },
    validateStatus: () => true,
  });
  const started = Date.now();
  let requests = 0;
  const post = async (attributes: Record<string, unknown>[]) => {
    for (;;) {
      requests += 1;
      const response = await client.post('/users/track', { attributes });
      if (response.status !== 429) return;
      const reset = Number(response.headers['x-ratelimit-reset']) * 1000;
      await new Promise((r) => setTimeout(r, Math.max(0, reset - Date.now())));
    }
  };
  for (const segment of SEGMENTS) {
    for await (const blob of container.listBlobsFlat({ prefix: `${INSTANCE}/${DESTINATION}/${segment}/${runFolder}/` })) {
      const body = (await container.getBlobClient(blob.name).download()).readableStreamBody as Readable;
      let batch: Record<string, unknown>[] = [];
      for await (const record of body.pipe(parse()) as AsyncIterable<string[]>) {
        batch.push({
          external_id: record[0],
          email: record[1].toLowerCase(),
          first_name: record[2],
          last_name: record[3],
          loyalty_points: Number(record[4]),
          last_purchase_at: record[5],
          [segment === 'HighValue' ? 'ci_high_value' : 'ci_newsletter']: true,
        });
        if (batch.length === 75) {
          await post(batch);
          batch = [];
        }
      }
      if (batch.length) await post(batch);
    }
  }
  return { seconds: (Date.now() - started) / 1000, requests };
}

/**
 * The floor under any reader: the same partitions, from the same storage, through the same CSV
 * parser with the same options, one after another, doing nothing with the rows.
 */
async function parseFloor(container: ContainerClient, runFolder: string): Promise<{ seconds: number; rows: number }> {
  const started = Date.now();
  let rows = 0;
  for (const segment of SEGMENTS) {
    for await (const blob of container.listBlobsFlat({ prefix: `${INSTANCE}/${DESTINATION}/${segment}/${runFolder}/` })) {
      const body = (await container.getBlobClient(blob.name).download()).readableStreamBody as Readable;
      const parser = parse(csvParserOptions(csvFormatOf(undefined, blob.name)));
      body.pipe(parser);
      for await (const _record of parser as AsyncIterable<string[]>) rows += 1;
    }
  }
  return { seconds: (Date.now() - started) / 1000, rows };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      profiles: { type: 'string', default: '1000000' },
      partitions: { type: 'string', default: '4' },
      json: { type: 'boolean', default: false },
      'skip-baseline': { type: 'boolean', default: false },
      workers: { type: 'string', default: '2' },
      'braze-latency-ms': { type: 'string', default: '0' },
      'cpu-profile': { type: 'string' },
      project: { type: 'boolean', default: false },
    },
  });
  const profiles = Number(values.profiles);
  const partitions = Number(values.partitions);
  const say = (line: string) => {
    if (!values.json) console.log(line);
  };

  const azurite = await startAzurite();
  // Loopback answers in about a millisecond; --braze-latency-ms adds what a real network and Braze take.
  const brazeEnv = {
    ...process.env,
    BRAZE_API_KEY: API_KEY,
    BRAZE_RATE_LIMIT: '3000',
    BRAZE_RATE_WINDOW_MS: '3000',
    BRAZE_LATENCY_MS: values['braze-latency-ms'],
  };
  const braze = await startChild('local/brazeServerMain.js', brazeEnv, /^http:/);
  const brazeUrl = braze.firstLine;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AzureWebJobsStorage: azurite.connectionString,
    EXPORT_CONTAINER: 'customer-insights',
    BRAZE_REST_ENDPOINT: brazeUrl,
    BRAZE_API_KEY: API_KEY,
    SYNC_CONFIG: JSON.stringify(config),
    // The benchmark is the workspace's only client: no share held back for other tools.
    BRAZE_RATE_LIMIT_RESERVE_SHARE: process.env.BRAZE_RATE_LIMIT_RESERVE_SHARE ?? '0',
  };
  const workers: ChildProcess[] = [];
  try {
    const deps = createConnector({ env, log: silentLogger });
    await ensureReady(deps);
    await deps.storage.exportContainer.createIfNotExists();

    say(`generating ${profiles.toLocaleString()} profiles (${partitions} partitions per segment) into Azurite…`);
    const generated = await writeExport(deps.storage.exportContainer, profiles, partitions, '2026/11/27/0600', 0);
    say(`  ${generated.rows.toLocaleString()} rows, ${(generated.bytes / 1e6).toFixed(0)} MB of CSV`);

    // Function instances: each runs every queue trigger, as the Functions host does when it scales out.
    for (let i = 0; i < Number(values.workers); i++) workers.push((await startChild('local/worker.js', env, /worker ready/)).child);
    const connectorCpu = () => workers.reduce((n, w) => n + processStats(w.pid!).cpuSeconds, 0);
    const cpuOf = () => ({
      connector: connectorCpu(),
      braze: processStats(braze.child.pid!).cpuSeconds,
      azurite: processStats(azurite.process.pid!).cpuSeconds,
      bench: process.cpuUsage(),
    });
    const cpuBefore1 = cpuOf();
    const before1 = await brazeStats(brazeUrl);
    // --cpu-profile DIR: each worker's CPU profile of each refresh apart, summed by stage.
    const profileDir = values['cpu-profile'];
    const stages: Record<string, ReturnType<typeof stageTable>> = {};
    const profiled = async <T>(label: string, rows: number, work: () => Promise<T>): Promise<T> => {
      if (!profileDir) return work();
      mkdirSync(profileDir, { recursive: true });
      await profileWorkers(workers, 'start', profileDir, label);
      const result = await work();
      stages[label] = stageTable(stageTimes(await profileWorkers(workers, 'stop', profileDir, label)), rows);
      return result;
    };
    say('refresh 1: full sync…');
    // --project: the workers' CPU and Braze's request count four times a second, to find the senders' CPU per request once every reading step is done.
    const samples: Sample[] = [];
    const sample = values.project
      ? async () => void samples.push({ atMs: Date.now(), cpu: connectorCpu(), requests: (await brazeStats(brazeUrl)).requests })
      : undefined;
    const refresh1 = await profiled('refresh1', generated.rows, () => syncAndWait(deps, sample));
    const after1 = await brazeStats(brazeUrl);
    const cpuAfter1 = cpuOf();
    // CPU every process spent during refresh 1: with 2 cores, their sum ÷ 2 is a floor for the wall time.
    const refresh1Cpu = {
      connector: round(cpuAfter1.connector - cpuBefore1.connector),
      brazeServer: round(cpuAfter1.braze - cpuBefore1.braze),
      azurite: round(cpuAfter1.azurite - cpuBefore1.azurite),
      benchObserver: round((cpuAfter1.bench.user + cpuAfter1.bench.system - cpuBefore1.bench.user - cpuBefore1.bench.system) / 1e6),
    };
    const requests1 = after1.requests - before1.requests;
    const sendingSeconds = ((after1.lastRequestAtMs ?? 0) - (after1.firstRequestAtMs ?? 0)) / 1000;
    const http429 = (after1.byStatus['429'] ?? 0) - (before1.byStatus['429'] ?? 0);

    say('refresh 2: ~5% of profiles changed…');
    await writeExport(deps.storage.exportContainer, profiles, partitions, '2026/11/28/0600', 0.05);
    if (process.env.BENCH_VERBOSE)
      process.stderr.write(`${((Date.now() - BENCH_STARTED) / 1000).toFixed(2).padStart(8)} [bench] refresh 2 written, starting\n`);
    const before2 = await brazeStats(brazeUrl);
    const refresh2 = await profiled('refresh2', generated.rows, () => syncAndWait(deps));
    const after2 = await brazeStats(brazeUrl);
    const connector = { peakRssMb: Math.max(...workers.map((w) => processStats(w.pid!).peakRssMb)), cpuSeconds: round(connectorCpu()) };
    const brazeProcess = processStats(braze.child.pid!);
    const azuriteProcess = processStats(azurite.process.pid!);

    say('parse floor: the refresh-2 partitions through the CSV parser alone…');
    const floor = await parseFloor(deps.storage.exportContainer, '2026/11/28/0600');

    let baseline: { seconds: number; requests: number } | undefined;
    if (!values['skip-baseline']) {
      say('baseline: stream the CSVs, POST every 75 rows sequentially, no queue…');
      baseline = await naiveBaseline(deps.storage.exportContainer, brazeUrl, '2026/11/27/0600');
    }

    const limitPerSecond = 3000 / 3;
    const result = {
      profiles,
      rows: generated.rows,
      workers: workers.length,
      brazeLatencyMs: Number(values['braze-latency-ms']),
      seconds: round(refresh1.seconds),
      profilesPerSecond: Math.round(profiles / refresh1.seconds),
      brazeRequests: requests1,
      brazeRequestsPerSecond: Math.round(requests1 / Math.max(sendingSeconds, 0.001)),
      rateLimitRequestsPerSecond: limitPerSecond,
      ceilingRatio: round(requests1 / Math.max(sendingSeconds, 0.001) / limitPerSecond),
      sendingSeconds: round(sendingSeconds),
      http429,
      http429Share: round(http429 / Math.max(requests1, 1), 4),
      queueMessages: refresh1.run.batchesEnqueued,
      peakRssMb: connector.peakRssMb,
      connectorCpuSeconds: connector.cpuSeconds,
      brazeServerPeakRssMb: brazeProcess.peakRssMb,
      brazeServerCpuSeconds: brazeProcess.cpuSeconds,
      azuritePeakRssMb: azuriteProcess.peakRssMb,
      azuriteCpuSeconds: azuriteProcess.cpuSeconds,
      refresh1CpuSeconds: refresh1Cpu,
      refresh1CpuFloorSeconds: round((refresh1Cpu.connector + refresh1Cpu.brazeServer + refresh1Cpu.azurite + refresh1Cpu.benchObserver) / 2),
      connectorCpuMicrosPerRow: round((refresh1Cpu.connector * 1e6) / generated.rows, 1),
      parseFloorSeconds: round(floor.seconds),
      parseFloorRows: floor.rows,
      refresh2OverParseFloor: round(refresh2.seconds / Math.max(floor.seconds, 0.001)),
      refresh2Seconds: round(refresh2.seconds),
      refresh2Requests: after2.requests - before2.requests,
      refresh2ProfilesSent: refresh2.run.usersEnqueued,
      refresh2RowsUnchanged: refresh2.run.rowsSkippedUnchanged,
      baselineSeconds: baseline ? round(baseline.seconds) : null,
      baselineRequests: baseline?.requests ?? null,
      speedupVsBaseline: baseline ? round(baseline.seconds / refresh1.seconds) : null,
      refresh1OverBaseline: baseline ? round(refresh1.seconds / baseline.seconds) : null,
      ...(profileDir ? { profileStages: stages } : {}),
    };
    const projection = values.project
      ? await scaleModel(deps, refresh1, {
          rows: generated.rows,
          profiles,
          partitions: partitions * SEGMENTS.length,
          requests: requests1,
          samples,
          workers: workers.length,
        })
      : undefined;
    if (values.json) {
      console.log(JSON.stringify(projection ? { ...result, scaleModel: projection } : result));
    } else {
      console.log('\nresult');
      for (const [key, value] of Object.entries(result))
        if (key !== 'profileStages') console.log(`  ${key.padEnd(26)} ${typeof value === 'object' && value ? JSON.stringify(value) : value}`);
      for (const [label, rows] of Object.entries(stages)) {
        console.log(`\nconnector CPU of ${label} by stage (both workers; µs per input row)`);
        for (const row of rows)
          console.log(`  ${String(row.ms).padStart(8)} ms ${row.share.toFixed(1).padStart(5)}% ${row.microsPerRow.toFixed(1).padStart(6)} µs  ${row.stage}`);
      }
      if (projection) printScaleModel(projection);
    }
  } finally {
    // Workers first, so their pollers do not complain about storage going away.
    await Promise.all(workers.map((w) => new Promise((resolve) => (w.exitCode !== null ? resolve(null) : (w.once('exit', resolve), w.kill('SIGTERM'))))));
    braze.child.kill('SIGTERM');
    await azurite.stop();
  }
}

interface Sample {
  atMs: number;
  cpu: number;
  requests: number;
}

/**
 * The senders' CPU per Braze request: the workers' CPU over the requests sent after the last
 * reading step ended, when sending (with its ledgers and the finalizer) is all they do. During the
 * steps the senders share the workers with them, and a step's time cannot be told from theirs.
 */
function senderCpuPerRequest(samples: Sample[], lastStepEndMs: number): number {
  const after = samples.filter((s) => s.atMs >= lastStepEndMs);
  if (after.length < 2) return 0;
  const [from, to] = [after[0], after[after.length - 1]];
  return to.requests > from.requests ? (to.cpu - from.cpu) / (to.requests - from.requests) : 0;
}

/** Refresh 1's steps as the runs table recorded them (each step's work time and end), turned into costs and projected. */
async function scaleModel(
  deps: ConnectorDeps,
  refresh: { run: RunRecord; seconds: number; startedMs: number; endedMs: number },
  measured: { rows: number; profiles: number; partitions: number; requests: number; samples: Sample[]; workers: number },
) {
  const steps = async (kind: 'map' | 'shard') =>
    (await deps.units.list(refresh.run.runId, kind)).map((u) => {
      const work = u.totals?.workSeconds ?? 0;
      const end = Date.parse(u.totals?.endedAt ?? '');
      return { work, start: end - work * 1000, end };
    });
  const maps = await steps('map');
  const shards = await steps('shard');
  const sum = (list: { work: number }[]) => list.reduce((n, s) => n + s.work, 0);
  const first = (list: { start: number }[]) => Math.min(...list.map((s) => s.start));
  const last = (list: { end: number }[]) => Math.max(...list.map((s) => s.end));
  // Where the wall time went: before the first step, the map phase, between the phases, the diff phase, after it (sending's tail, finalize).
  const timeline = {
    beforeFirstStep: round((first(maps) - refresh.startedMs) / 1000),
    mapPhase: round((last(maps) - first(maps)) / 1000),
    betweenPhases: round((first(shards) - last(maps)) / 1000),
    diffPhase: round((last(shards) - first(shards)) / 1000),
    afterLastStep: round((refresh.endedMs - last(shards)) / 1000),
    mapStepSeconds: round(sum(maps)),
    diffStepSeconds: round(sum(shards)),
  };
  const costs: MeasuredCosts = {
    rowsPerProfile: measured.rows / measured.profiles,
    rowsPerPartition: measured.rows / measured.partitions,
    mapSecondsPerRow: sum(maps) / measured.rows,
    diffSecondsPerProfile: sum(shards) / measured.profiles,
    requestsPerProfile: measured.requests / measured.profiles,
    requestsPerMessage: measured.requests / Math.max(1, refresh.run.batchesEnqueued),
    sendSecondsPerRequest: senderCpuPerRequest(measured.samples, last(shards)),
  };
  // This machine as a platform: a hop costs what it cost here (the mean of the two waits before steps), Braze's limit is the same.
  const here: Platform = { ...FLEX_CONSUMPTION, name: 'this machine', hopSeconds: (timeline.beforeFirstStep + timeline.betweenPhases) / 2, hops: 2 };
  const check = project(costs, here, measured.profiles, measured.workers);
  const projections = [1_000_000, 10_000_000, 100_000_000].flatMap((p) => [1, 16, 100].map((i) => project(costs, FLEX_CONSUMPTION, p, i)));
  return {
    timeline,
    costs: {
      ...costs,
      mapMicrosPerRow: round(costs.mapSecondsPerRow * 1e6, 1),
      diffMicrosPerProfile: round(costs.diffSecondsPerProfile * 1e6, 1),
      sendMillisPerRequest: round(costs.sendSecondsPerRequest * 1e3, 2),
    },
    selfCheck: { workers: measured.workers, predictedSeconds: round(check.seconds), measuredSeconds: round(refresh.seconds), boundBy: check.boundBy },
    platform: FLEX_CONSUMPTION,
    projections: projections.map((p) => ({
      ...p,
      seconds: round(p.seconds),
      mapSeconds: round(p.mapSeconds),
      diffSeconds: round(p.diffSeconds),
      sendSeconds: round(p.sendSeconds),
      brazeFloorSeconds: round(p.brazeFloorSeconds),
    })),
  };
}

function printScaleModel(model: Awaited<ReturnType<typeof scaleModel>>): void {
  const { timeline, costs, selfCheck, projections } = model;
  console.log('\nrefresh 1 timeline (s)', JSON.stringify(timeline));
  console.log(
    `measured costs: map ${costs.mapMicrosPerRow} µs/row, diff ${costs.diffMicrosPerProfile} µs/profile, senders ${costs.sendMillisPerRequest} ms/request, ` +
      `${round(costs.requestsPerProfile * 1e3, 2)} requests per 1,000 profiles, ${round(costs.requestsPerMessage, 1)} requests per queue message`,
  );
  console.log(
    `model check, this run: ${selfCheck.predictedSeconds} s predicted for ${selfCheck.workers} worker(s), ${selfCheck.measuredSeconds} s measured (${selfCheck.boundBy})`,
  );
  console.log(
    `\nfirst sync on ${model.platform.name} (${model.platform.hops} hops of ${model.platform.hopSeconds} s, one reading step per instance on its own core)`,
  );
  console.log('     profiles  instances   seconds    map   diff  senders  Braze floor  bound by');
  for (const p of projections)
    console.log(
      `  ${p.profiles.toLocaleString('en').padStart(11)}  ${String(p.instances).padStart(9)}  ${String(p.seconds).padStart(8)}  ${String(p.mapSeconds).padStart(5)}  ${String(p.diffSeconds).padStart(5)}  ${String(p.sendSeconds).padStart(5)}  ${String(p.brazeFloorSeconds).padStart(11)}  ${p.boundBy}`,
    );
}

function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
