import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startAzurite } from '../../local/azurite';
import { BrazeServer } from '../../local/brazeServer';

const root = path.join(__dirname, '..', '..');
const runner = path.join(root, 'dist', 'local', 'runner.js');
const env = { ...process.env, AzureWebJobsStorage: '', BRAZE_REST_ENDPOINT: '', BRAZE_API_KEY: '' };

/** Asynchronously, for tests whose Braze server lives in this process (spawnSync would block it). */
function runAsync(args: string[], withEnv: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [runner, ...args], { env: withEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 110_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

function run(args: string[]) {
  const result = spawnSync(process.execPath, [runner, ...args], { env, encoding: 'utf8', timeout: 110_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('npm start: the local runner', () => {
  it('shows progress while it syncs, then lists the run history of the storage it is pointed at (--runs)', async () => {
    const azurite = await startAzurite();
    try {
      const withStorage = { ...env, AzureWebJobsStorage: azurite.connectionString };
      const synced = spawnSync(process.execPath, [runner], { env: withStorage, encoding: 'utf8', timeout: 110_000 });
      expect(synced.status).toBe(0);
      expect(synced.stdout).toMatch(/r-[0-9a-f]+ \w+: \d+ rows read \(\d+\/s\), (reading|\d+\/\d+ profiles delivered)/);
      const listed = spawnSync(process.execPath, [runner, '--runs', '--json'], { env: withStorage, encoding: 'utf8', timeout: 60_000 });
      expect(listed.stderr).toBe('');
      const history = JSON.parse(listed.stdout) as { runs: { runId: string; status: string; rows: { read: number } }[] };
      expect(history.runs).toEqual([expect.objectContaining({ status: 'completed', rows: expect.objectContaining({ read: 16 }) })]);
      const human = spawnSync(process.execPath, [runner, '--runs', '--status', 'completed'], { env: withStorage, encoding: 'utf8', timeout: 60_000 });
      expect(human.stdout).toMatch(/r-[0-9a-f]+ +completed +BrazeExport +refresh 2026\/11\/28\/0600 +rows 16 read/);
      const bad = spawnSync(process.execPath, [runner, '--runs', '--status', 'asleep'], { env: withStorage, encoding: 'utf8', timeout: 60_000 });
      expect(bad.status).toBe(2);
      // The bad value and what is allowed.
      expect(bad.stderr).toMatch(/status: must be one of .*"completed".* \(received "asleep"\)/);
      // Where a user of the sample stands (--user): GET /api/users/{id}'s answer.
      const user = spawnSync(process.execPath, [runner, '--user', '1c9a4e52-0b1f-4d7e-9a11-3f1e2d4c5b01'], {
        env: withStorage,
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect({ status: user.status, stderr: user.stderr }).toEqual({ status: 0, stderr: '' });
      const found = JSON.parse(user.stdout) as { user: unknown; delivered: { segments: string[]; stateRun: string } };
      expect(found.user).toEqual({ by: 'external_id', id: '1c9a4e52-0b1f-4d7e-9a11-3f1e2d4c5b01' });
      expect(found.delivered.segments.length).toBeGreaterThan(0);
      expect(found.delivered.stateRun).toBe(history.runs[0].runId);
      expect(user.stdout).not.toContain('@');
    } finally {
      await azurite.stop();
    }
    const noStorage = run(['--runs']);
    expect(noStorage.code).toBe(2);
    expect(noStorage.stderr).toMatch(/--runs reads the runs of the storage AzureWebJobsStorage names/);
  }, 120_000);

  it.each(['timer', 'http', 'blob'])('syncs the sample export through the %s trigger and prints a JSON summary', (trigger) => {
    const result = run([
      '--json',
      '--trigger',
      trigger,
      '--export-dir',
      path.join(root, 'sample', 'export'),
      '--config',
      path.join(root, 'sample', 'config.json'),
    ]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary).toMatchObject({ trigger, rowsRead: 16, failed: 0, brazeProfiles: 12 });
    expect(summary.delivered + summary.skippedUnchanged + summary.rejected).toBe(summary.rowsRead);
    expect(summary.runs[0].rejectsReport).toMatch(/^runs\/r-[0-9a-f]+\/rejects\.csv$/);
  });

  it('--dry-run previews the sample export without sending anything', () => {
    const human = run(['--dry-run']);
    expect(human.stderr).toBe('');
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/Preview of run d-[0-9a-f]+-\w+ \(dry run: nothing was sent/);
    expect(human.stdout).toMatch(/a real run would send 12 profiles \(0 leaving\) in 1 requests/);
    expect(human.stdout).toMatch(/local Braze now holds 0 profiles/);
    // The counts add up in a dry run too: what it would send, what is unchanged, what was rejected.
    expect(human.stdout).toMatch(/rows: 16 read = 14 would be sent \+ 0 unchanged \+ 2 rejected\n/);
    const json = run(['--dry-run', '--json']);
    expect(json.code).toBe(0);
    // One JSON document, the preview inside it.
    const summary = JSON.parse(json.stdout);
    expect(summary).toMatchObject({ trigger: 'http', rowsRead: 16, delivered: 0, wouldSend: 14, rejected: 2, brazeRequests: 0, brazeProfiles: 0 });
    expect(summary.wouldSend + summary.skippedUnchanged + summary.rejected).toBe(summary.rowsRead);
    expect(summary.runs[0]).toMatchObject({ preview: { profiles: { wouldSend: 12, leaving: 0 }, brazeRequests: 1 }, rows: { wouldSend: 14 } });
    expect(run(['--dry-run', '--trigger', 'blob']).stderr).toMatch(/--dry-run goes with --trigger http/);
    // A blob event has no body either: --force was silently a plain run there.
    expect(run(['--force', '--trigger', 'blob']).stderr).toMatch(/--force goes with --trigger http/);
  });

  it('--reconcile compares the local Braze with the sample export and repairs the drift; with --dry-run it only reports', () => {
    const preview = run(['--reconcile', '--dry-run', '--json']);
    expect(preview.stderr).toBe('');
    expect(preview.code).toBe(0);
    // One JSON document; the local Braze starts empty: every member is missing there.
    expect(JSON.parse(preview.stdout)).toMatchObject({
      trigger: 'http',
      brazeRequests: 0,
      brazeProfiles: 0,
      runs: [{ drift: { profiles: 12, requests: 1, segments: { ci_high_value: { missing: expect.any(Number), stray: 0 } } } }],
    });
    const repaired = run(['--reconcile']);
    expect(repaired.code).toBe(0);
    expect(repaired.stdout).toMatch(/Drift found by run c-[0-9a-f]+-\w+\n/);
    expect(repaired.stdout).toMatch(/12 profiles repaired in 1 requests/);
    expect(repaired.stdout).toMatch(/local Braze now holds 12 profiles/);
    expect(run(['--reconcile', '--trigger', 'blob']).stderr).toMatch(/--reconcile goes with --trigger http/);
  }, 120_000);

  it('says why the guard held a run and how to approve it; --approve sends it, --cancel refuses a run that is not held', async () => {
    const azurite = await startAzurite();
    try {
      const withStorage = { ...env, AzureWebJobsStorage: azurite.connectionString };
      const start = (args: string[]) => spawnSync(process.execPath, [runner, ...args], { env: withStorage, encoding: 'utf8', timeout: 110_000 });
      // The sample's segments are small: the guard judges them from the first member cleared.
      const dir = mkdtempSync(path.join(tmpdir(), 'guard-'));
      const config = JSON.parse(readFileSync(path.join(root, 'sample', 'config.json'), 'utf8')) as { destinations: Record<string, unknown>[] };
      config.destinations[0].guard = { maxClearedShare: 0.2, minProfiles: 0 };
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
      expect(start(['--config', path.join(dir, 'config.json')]).status).toBe(0);

      // A broken export: HighValueCustomers' files arrive empty.
      const broken = path.join(dir, 'export');
      cpSync(path.join(root, 'sample', 'export'), broken, { recursive: true });
      const folder = path.join(broken, readdirSync(broken)[0], 'BrazeExport', 'HighValueCustomers', '2026', '11', '28', '0600');
      for (const file of readdirSync(folder)) writeFileSync(path.join(folder, file), '');
      const held = start(['--config', path.join(dir, 'config.json'), '--export-dir', broken, '--json']);
      expect(held.status).toBe(3);
      const summary = JSON.parse(held.stdout) as { runs: { runId: string; status: string }[]; delivered: number };
      expect(summary.runs[0].status).toBe('held');
      expect(summary.delivered).toBe(0);
      const runId = summary.runs[0].runId;
      expect(held.stderr).toContain(`run ${runId} is held by the destination's guard: ci_high_value:`);
      expect(held.stderr).toContain(`npm start -- --approve ${runId}`);

      const approved = start(['--config', path.join(dir, 'config.json'), '--approve', runId, '--json']);
      expect(approved.stderr).toBe('');
      expect(approved.status).toBe(0);
      expect(JSON.parse(approved.stdout)).toMatchObject({ runs: [{ runId, status: 'completed', approved: true }] });
      const again = start(['--config', path.join(dir, 'config.json'), '--cancel', runId]);
      expect(again.status).toBe(2);
      expect(again.stderr).toMatch(/answered 409: run .* is not held: it was approved and is completed/);
    } finally {
      await azurite.stop();
    }
    expect(run(['--approve', 'r-0123']).stderr).toMatch(/--approve acts on a run kept in the storage AzureWebJobsStorage names/);
  }, 120_000);

  it('refuses a malformed config with a message naming the field, and exits non-zero', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
    const config = path.join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ destinations: [{ name: 'BrazeExport', segments: [], matching: { emailColumn: 'EMail' } }] }));
    const result = run(['--config', config]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/destinations\.0\.segments: needs at least one segment/);
  });

  it('refuses an unknown trigger', () => {
    const result = run(['--trigger', 'cron']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--trigger must be timer, http or blob/);
  });
  it('says why a trigger started no run, whichever trigger it was', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'why-'));
    // The README's config as written: its "instance" is a placeholder no export has.
    const config = JSON.parse(readFileSync(path.join(root, 'sample', 'config.json'), 'utf8')) as { destinations: Record<string, unknown>[] };
    config.destinations[0].instance = 'CustomerInsights_…';
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    const instance = readdirSync(path.join(root, 'sample', 'export'))[0];
    for (const trigger of ['timer', 'http']) {
      const result = run(['--config', path.join(dir, 'config.json'), '--trigger', trigger]);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`the destination's "instance" is CustomerInsights_…, and BrazeExport/model.json is under ${instance}`);
    }
    const blob = run(['--config', path.join(dir, 'config.json'), '--trigger', 'blob']);
    expect(blob.code).toBe(2);
    expect(blob.stderr).toContain(`the export is of instance ${instance}; destination "BrazeExport" takes only instance CustomerInsights_…`);
    // --export-dir one level too deep: the CustomerInsights_* folder itself.
    const deep = run(['--export-dir', path.join(root, 'sample', 'export', instance)]);
    expect(deep.code).toBe(2);
    expect(deep.stderr).toMatch(/it holds no CustomerInsights_\* folder \(it holds BrazeExport\/\)/);
    const empty = run(['--export-dir', mkdtempSync(path.join(tmpdir(), 'empty-'))]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/the container is empty/);
  }, 120_000);

  it("decides its exit code by its own runs only: an old halted or superseded run in kept storage is not this start's", async () => {
    const azurite = await startAzurite();
    const braze = new BrazeServer({ apiKey: 'the-right-key' });
    const endpoint = await braze.start();
    try {
      const dir = mkdtempSync(path.join(tmpdir(), 'kept-'));
      const exportDir = path.join(dir, 'export');
      cpSync(path.join(root, 'sample', 'export'), exportDir, { recursive: true });
      const start = (args: string[], apiKey: string) =>
        runAsync(['--export-dir', exportDir, ...args], {
          ...env,
          AzureWebJobsStorage: azurite.connectionString,
          BRAZE_REST_ENDPOINT: endpoint,
          BRAZE_API_KEY: apiKey,
        });
      // CI's next refresh an hour later: the same files in the 0700 folders, model.json pointing there.
      const newerRefresh = () => {
        const destination = path.join(exportDir, readdirSync(exportDir)[0], 'BrazeExport');
        for (const table of ['HighValueCustomers', 'NewsletterOptIns']) {
          const day = path.join(destination, table, '2026', '11', '28');
          renameSync(path.join(day, '0600'), path.join(day, '0700'));
        }
        const model = path.join(destination, 'model.json');
        writeFileSync(model, readFileSync(model, 'utf8').replaceAll('/0600/', '/0700/').replaceAll('T06:0', 'T07:0'));
      };

      const halted = await start(['--json'], 'a-wrong-key');
      expect(halted.status).toBe(1);
      const haltedRun = (JSON.parse(halted.stdout) as { runs: { runId: string; status: string }[] }).runs[0];
      expect(haltedRun.status).toBe('halted');
      expect(halted.stderr).toContain(`npm start -- --resume ${haltedRun.runId}`);
      expect(halted.stderr).not.toContain('a-wrong-key');

      // A newer refresh supersedes the halted run and completes.
      newerRefresh();
      const next = await start(['--json'], 'the-right-key');
      expect(next.stderr).toContain(`run ${haltedRun.runId} (halted) superseded`);
      expect(next.status).toBe(0);
      const nextRuns = (JSON.parse(next.stdout) as { runs: { runId: string; status: string }[] }).runs;
      expect(nextRuns).toEqual([expect.objectContaining({ status: 'completed' })]);
      expect(nextRuns[0].runId).not.toBe(haltedRun.runId);

      // Nothing changed: the refresh's run is met, synced already.
      const same = await start([], 'the-right-key');
      expect(same.status).toBe(0);
      expect(same.stdout).toContain(`run ${nextRuns[0].runId} was completed before this start`);
      expect(same.stdout).toContain('(every file is there as it is)');

      // The superseded run cannot be resumed, and says so.
      const refused = await start(['--resume', haltedRun.runId], 'the-right-key');
      expect(refused.status).toBe(2);
      expect(refused.stderr).toMatch(/answered 409/);
    } finally {
      await braze.stop();
      await azurite.stop();
    }
  }, 120_000);

  it('resumes a halted run once the key is fixed (--resume)', async () => {
    const azurite = await startAzurite();
    const braze = new BrazeServer({ apiKey: 'the-right-key' });
    const endpoint = await braze.start();
    try {
      const start = (args: string[], apiKey: string) =>
        runAsync(args, { ...env, AzureWebJobsStorage: azurite.connectionString, BRAZE_REST_ENDPOINT: endpoint, BRAZE_API_KEY: apiKey });
      const halted = await start(['--json'], 'a-wrong-key');
      expect(halted.status).toBe(1);
      const runId = (JSON.parse(halted.stdout) as { runs: { runId: string }[] }).runs[0].runId;
      const resumed = await start(['--resume', runId, '--json'], 'the-right-key');
      expect(resumed.stderr).toBe('');
      expect(resumed.status).toBe(0);
      expect(JSON.parse(resumed.stdout)).toMatchObject({ runs: [{ runId, status: 'completed' }], delivered: 14, rejected: 2 });
      expect(braze.profiles.size).toBe(12);
    } finally {
      await braze.stop();
      await azurite.stop();
    }
  }, 120_000);

  it('checks flags and settings before it starts anything, naming the bad value', () => {
    const refused = (args: string[], extraEnv: Record<string, string> = {}) => {
      const result = spawnSync(process.execPath, [runner, ...args], { env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 60_000 });
      // Nothing started: no storage, Braze or upload line.
      expect({ code: result.status, stdout: result.stdout }).toEqual({ code: 2, stdout: '' });
      return result.stderr;
    };
    expect(refused(['--force', '--trigger', 'timer'])).toMatch(/--force goes with --trigger http/);
    expect(refused(['--timeout', 'soon'])).toMatch(/--timeout must be a number of seconds above 0, not "soon"/);
    expect(refused(['--export-dir', '/no/such/export'])).toMatch(/--export-dir: no folder "\/no\/such\/export"/);
    expect(refused(['--frobnicate'])).toMatch(/Unknown option '--frobnicate'.*--help/);
    // A flag of another mode is refused, not silently ignored.
    expect(refused(['--status', 'completed'])).toMatch(/--status goes with --runs/);
    expect(refused(['--destination', 'BrazeExport', '--trigger', 'blob'])).toMatch(/--destination goes with --trigger http/);
    // A broken SYNC_CONFIG_FILE is never replaced by the sample.
    expect(refused([], { SYNC_CONFIG_FILE: '/no/such/config.json' })).toMatch(/SYNC_CONFIG_FILE: no file "\/no\/such\/config.json"/);
    // A key without its endpoint is not dropped in favour of the local server.
    expect(refused([], { BRAZE_API_KEY: 'a-key-of-mine' })).toMatch(/BRAZE_REST_ENDPOINT/);
    expect(refused([], { SYNC_SCHEDULE: 'garbage' })).toMatch(/SYNC_SCHEDULE.*"garbage"/);
    expect(refused([], { RECONCILE_SCHEDULE: 'every sunday' })).toMatch(/RECONCILE_SCHEDULE.*"every sunday"/);
  });

  it('--force alone goes over http, as --dry-run does; each run is queued once in the log, and nothing is logged after the summary', () => {
    const forced = run(['--force', '--json']);
    expect(forced.code).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({ trigger: 'http', runs: [{ force: true, status: 'completed' }] });
    const blob = run(['--trigger', 'blob']);
    expect(blob.code).toBe(0);
    const runId = /runs: (r-[0-9a-f]+)/.exec(blob.stdout)![1];
    expect(blob.stdout.split('\n').filter((line) => line.startsWith(`run ${runId} queued`))).toHaveLength(1);
    const afterSummary = blob.stdout.slice(blob.stdout.indexOf('\nSummary'));
    expect(afterSummary.split('\n').filter((line) => line.startsWith('run '))).toEqual([]);
  });
});
