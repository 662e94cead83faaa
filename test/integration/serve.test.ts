import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitFor } from '../helpers/expectations';

const root = path.join(__dirname, '..', '..');
const serveJs = path.join(root, 'dist', 'local', 'serve.js');
const env = { ...process.env, AzureWebJobsStorage: '', BRAZE_REST_ENDPOINT: '', BRAZE_API_KEY: '', SYNC_CONFIG_FILE: '' };

interface Served {
  child: ChildProcessWithoutNullStreams;
  url: string;
  key: string;
  output: () => string;
}

/** Starts `npm run serve`'s program and waits for the line it prints once everything listens. */
async function serve(stateDir: string): Promise<Served> {
  const child = spawn(process.execPath, [serveJs, '--state', stateDir, '--port', '0'], { env });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const page = /^page: (http:\/\/127\.0\.0\.1:\d+)\/\?code=(\S+)$/m.exec(output);
    if (page) return { child, url: page[1], key: page[2], output: () => output };
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function stop(served: Served): Promise<number | null> {
  if (served.child.exitCode !== null) return served.child.exitCode;
  const exited = new Promise<number | null>((resolve) => served.child.once('exit', (code) => resolve(code)));
  served.child.kill('SIGTERM');
  return exited;
}

async function get<T>(served: Served, route: string): Promise<{ status: number; body: T }> {
  // The key as `?code=`, as a browser or curl passes it.
  const response = await fetch(`${served.url}${route}${route.includes('?') ? '&' : '?'}code=${served.key}`);
  return { status: response.status, body: (await response.json()) as T };
}

interface RunRow {
  runId: string;
  status: string;
  rows: { read: number; delivered: number; skippedUnchanged: number; rejected: number };
  users?: { delivered: number };
}

async function runsWhen(served: Served, done: (runs: RunRow[]) => boolean): Promise<RunRow[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const { status, body } = await get<{ runs: RunRow[] }>(served, '/api/runs');
    expect(status).toBe(200);
    if (done(body.runs)) return body.runs;
    if (Date.now() > deadline) throw new Error(`runs did not get there: ${JSON.stringify(body.runs)}\n${served.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const ANA = '1c9a4e52-0b1f-4d7e-9a11-3f1e2d4c5b01';

describe('npm run serve: the local product', () => {
  it('syncs what lands in the export folder, answers the API on its port, and keeps storage and Braze between starts', async () => {
    const stateDir = mkdtempSync(path.join(tmpdir(), 'serve-'));
    let served = await serve(stateDir);
    try {
      // The first start fills the export folder with the sample, which lands as Event Grid would announce it.
      const first = await runsWhen(served, (runs) => runs.some((r) => r.status === 'completed'));
      expect(first).toEqual([expect.objectContaining({ status: 'completed', rows: expect.objectContaining({ read: 16, delivered: 14, rejected: 2 }) })]);
      const ana = await get<{ user: Record<string, unknown> }>(served, `/local/braze/users/${ANA}?by=external_id`);
      expect(ana).toEqual({ status: 200, body: { user: expect.objectContaining({ ci_high_value: true, loyalty_points: 1520 }) } });
      expect((await get(served, '/local/braze/users/nobody?by=external_id')).status).toBe(404);
      expect((await fetch(`${served.url}/api/runs`)).status).toBe(401);
      const page = await fetch(`${served.url}/?code=${served.key}`);
      expect({ status: page.status, type: page.headers.get('content-type') }).toEqual({ status: 200, type: 'text/html; charset=utf-8' });

      // npm start on the same storage does not start hosts of its own beside serve's.
      const storage = /AzureWebJobsStorage="([^"]+)"/.exec(served.output())![1];
      const beside = spawnSync(process.execPath, [path.join(root, 'dist', 'local', 'runner.js'), '--resume', first[0].runId], {
        env: { ...env, AzureWebJobsStorage: storage },
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(beside.status).toBe(2);
      expect(beside.stderr).toContain(`npm run serve is running on this storage (${served.url}): resume the run on its page`);

      // One changed row: an incremental run sends that profile alone (her two rows: she is in both segments).
      const exportDir = path.join(stateDir, 'export');
      const folder = path.join(exportDir, readdirSync(exportDir)[0], 'BrazeExport', 'HighValueCustomers', '2026', '11', '28', '0600');
      const file = path.join(folder, 'HighValueCustomers_1.csv');
      writeFileSync(file, readFileSync(file, 'utf8').replace('"Ana","Silva","1520"', '"Ana","Silva","1600"'));
      const second = await runsWhen(served, (runs) => runs.length === 2 && runs.every((r) => r.status === 'completed'));
      const incremental = second.find((r) => r.runId !== first[0].runId)!;
      expect(incremental.rows).toMatchObject({ read: 16, delivered: 2, skippedUnchanged: 12, rejected: 2 });
      expect(incremental).toMatchObject({ users: { delivered: 1 } });
      expect((await get<{ user: Record<string, unknown> }>(served, `/local/braze/users/${ANA}`)).body.user.loyalty_points).toBe(1600);

      expect(served.output()).toMatch(/^\S+ export: \S+\/HighValueCustomers_1\.csv uploaded$/m);
      expect(await stop(served)).toBe(0);
      expect(existsSync(path.join(stateDir, 'braze-profiles.json'))).toBe(true);

      // Started again: the same runs, the same Braze profiles, the same key; nothing re-uploaded.
      const key = served.key;
      served = await serve(stateDir);
      expect(served.key).toBe(key);
      const kept = await runsWhen(served, (runs) => runs.length === 2);
      expect(kept.map((r) => r.runId).sort()).toEqual(second.map((r) => r.runId).sort());
      expect((await get<{ user: Record<string, unknown> }>(served, `/local/braze/users/${ANA}`)).body.user.loyalty_points).toBe(1600);
      // The files are not written again; model.json is, pointed at this start's Azurite (its ports
      // are new with --port 0), and meets the run its refresh already has. It goes last, after the
      // CSV files were looked at.
      const repointed = /^\S+ export: \S+\/model\.json uploaded$/m;
      await waitFor(() => repointed.test(served.output()), 30_000, 200).catch(() => undefined);
      expect(served.output()).toMatch(repointed);
      expect(served.output()).not.toMatch(/^\S+ export: \S+\.csv uploaded$/m);
      expect((await get<{ runs: RunRow[] }>(served, '/api/runs')).body.runs).toHaveLength(2);

      // A reconcile after the restart reads the export where this start keeps it: no drift.
      const asked = await fetch(`${served.url}/api/reconcile`, {
        method: 'POST',
        headers: { 'x-functions-key': served.key, 'content-type': 'application/json' },
        body: JSON.stringify({ destination: 'BrazeExport' }),
      });
      expect(asked.status).toBe(202);
      const reconcileId = ((await asked.json()) as { runId: string }).runId;
      const reconciled = await runsWhen(served, (runs) => runs.some((r) => r.runId === reconcileId && r.status === 'completed'));
      expect(reconciled.find((r) => r.runId === reconcileId)).toMatchObject({ rows: expect.objectContaining({ delivered: 0 }) });
      const { body: detail } = await get<{ drift: { profiles: number } }>(served, `/api/runs/${reconcileId}`);
      expect(detail.drift).toMatchObject({ profiles: 0 });
    } finally {
      await stop(served);
    }
  }, 180_000);

  it('refuses a bad flag or setting before it starts anything', async () => {
    const run = (args: string[], extra: Record<string, string> = {}) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [serveJs, ...args], { env: { ...env, ...extra } });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
        child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    const state = mkdtempSync(path.join(tmpdir(), 'serve-bad-'));
    expect(await run(['--port', 'seventy'])).toMatchObject({
      code: 2,
      stdout: '',
      stderr: expect.stringMatching(/--port must be a port number 0-65535, not "seventy"/),
    });
    expect(await run(['--state', state, '--port', '0'], { SYNC_SCHEDULE: 'every 5 minutes' })).toMatchObject({
      code: 2,
      stdout: '',
      stderr: expect.stringMatching(/SYNC_SCHEDULE: "every 5 minutes" is not an NCRONTAB expression/),
    });
    expect(readdirSync(state)).toEqual([]);
  }, 60_000);
});
