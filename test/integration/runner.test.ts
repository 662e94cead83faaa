import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startAzurite } from '../../local/azurite';

const root = path.join(__dirname, '..', '..');
const runner = path.join(root, 'dist', 'local', 'runner.js');
const env = { ...process.env, AzureWebJobsStorage: '', BRAZE_REST_ENDPOINT: '', BRAZE_API_KEY: '' };

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
      expect(bad.stderr).toMatch(/status/);
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
    const summary = JSON.parse(result.stdout.trim().split('\n').at(-1)!);
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
    const json = run(['--dry-run', '--json']);
    expect(json.code).toBe(0);
    const lines = json.stdout.trim().split('\n');
    expect(JSON.parse(lines.at(-2)!)).toMatchObject({ preview: { profiles: { wouldSend: 12, leaving: 0 }, brazeRequests: 1 } });
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ trigger: 'http', rowsRead: 16, delivered: 0, brazeRequests: 0, brazeProfiles: 0 });
    expect(run(['--dry-run', '--trigger', 'blob']).stderr).toMatch(/--dry-run goes with --trigger http/);
    // A blob event has no body either: --force was silently a plain run there.
    expect(run(['--force', '--trigger', 'blob']).stderr).toMatch(/--force goes with --trigger http/);
  });

  it('--reconcile compares the local Braze with the sample export and repairs the drift; with --dry-run it only reports', () => {
    const preview = run(['--reconcile', '--dry-run', '--json']);
    expect(preview.stderr).toBe('');
    expect(preview.code).toBe(0);
    const previewLines = preview.stdout.trim().split('\n');
    // The local Braze starts empty: every member is missing there.
    expect(JSON.parse(previewLines.at(-2)!)).toMatchObject({
      drift: { profiles: 12, requests: 1, segments: { ci_high_value: { missing: expect.any(Number), stray: 0 } } },
    });
    expect(JSON.parse(previewLines.at(-1)!)).toMatchObject({ trigger: 'http', brazeRequests: 0, brazeProfiles: 0 });
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
      const summary = JSON.parse(held.stdout.trim().split('\n').at(-1)!) as { runs: { runId: string; status: string }[]; delivered: number };
      expect(summary.runs[0].status).toBe('held');
      expect(summary.delivered).toBe(0);
      const runId = summary.runs[0].runId;
      expect(held.stderr).toContain(`run ${runId} is held by the destination's guard: ci_high_value:`);
      expect(held.stderr).toContain(`npm start -- --approve ${runId}`);

      const approved = start(['--config', path.join(dir, 'config.json'), '--approve', runId, '--json']);
      expect(approved.stderr).toBe('');
      expect(approved.status).toBe(0);
      expect(JSON.parse(approved.stdout.trim().split('\n').at(-1)!)).toMatchObject({ runs: [{ runId, status: 'completed', approved: true }] });
      const again = start(['--config', path.join(dir, 'config.json'), '--cancel', runId]);
      expect(again.status).toBe(2);
      expect(again.stderr).toMatch(/answered 409: run .* is not held: it was approved and is completed/);
    } finally {
      await azurite.stop();
    }
    expect(run(['--approve', 'r-0123']).stderr).toMatch(/--approve acts on a held run kept in the storage AzureWebJobsStorage names/);
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
});
