import { SettingApiKey } from '../../shared/braze/apiKey';
import { BrazeClient } from '../../shared/braze/client';
import { systemClock } from '../../shared/clock';
import { RateLimitPacer } from '../../shared/braze/pacer';
import { rejectsReportName } from '../../shared/runs/runBlobs';
import { rowsAccountedFor } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { BrazeServer } from '../../local/brazeServer';
import { csv, PROFILE_COLUMNS, writeExport } from '../helpers/exportBuilder';
import { startIsolatedStack, TEST_API_KEY, testConfig, type TestStack } from '../helpers/testStack';
import { runFolderAfterCleanup } from '../helpers/expectations';

const ID = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

describe('hostile exports get a clear error, never a crash or a read outside the export', () => {
  let azurite: AzuriteInstance;
  let stack: TestStack | undefined;
  beforeAll(async () => {
    azurite = await startAzurite();
  });
  afterAll(async () => {
    await azurite.stop();
  });
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  async function freshStack(config = testConfig()) {
    stack = await startIsolatedStack(azurite, { config, env: { SYNC_CONFIG: JSON.stringify(config) } });
    return stack;
  }

  it('refuses a model.json whose partitions lie outside the export container, or that is too large', async () => {
    const s = await freshStack();
    const container = s.app.deps.storage.exportContainer;
    const secret = 'CustomerInsights_0a1b2c3d/BrazeExport/HighValue/2026/11/28/0600/HighValue_1.csv';
    await s.app.deps.storage.stateContainer.getBlockBlobClient('secret.csv').upload('"x","y"\n', 8);
    const model = (location: string) =>
      JSON.stringify({
        entities: ['HighValue', 'Newsletter'].map((name) => ({ name, attributes: PROFILE_COLUMNS, partitions: [{ name: 'p', location }] })),
      });
    for (const location of [
      `${s.app.deps.storage.stateContainer.url}/secret.csv`,
      `${container.url}/CustomerInsights_0a1b2c3d/../../${s.app.deps.storage.stateContainer.containerName}/secret.csv`,
      `${container.url}/CustomerInsights_0a1b2c3d/%2e%2e/x.csv`,
      `https://elsewhere.blob.core.windows.net/${container.containerName}/${secret}`,
    ]) {
      await writeExport(container, { destination: 'BrazeExport', segments: [], modelJsonText: model(location) });
      const outcome = await requestSync(s.app.deps, { trigger: 'http' });
      expect(outcome.runs).toEqual([]);
      expect(outcome.problems).toEqual([expect.objectContaining({ retryable: false, error: expect.stringMatching(/^partition location .* (is not|has)/) })]);
    }
    const huge = `{"entities":[],"padding":"${'x'.repeat(16 * 1024 * 1024)}"}`;
    await writeExport(container, { destination: 'BrazeExport', segments: [], modelJsonText: huge });
    const outcome = await requestSync(s.app.deps, { trigger: 'http' });
    expect(outcome.problems[0].error).toMatch(/model\.json is larger than 16 MiB; refused/);
    expect(await s.app.deps.runs.listRuns()).toEqual([]);
  });

  it('keeps a refresh of 32 segments with many partitions off the run entity, and syncs it', async () => {
    const segments = Array.from({ length: 32 }, (_, i) => ({
      table: `Segment${String(i).padStart(2, '0')}WithAQuiteLongTableNameAsCustomersMake`,
      brazeSegmentId: `seg_${i}`,
    }));
    const config = testConfig({ segments });
    const s = await freshStack(config);
    await writeExport(s.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      segments: segments.map((segment, i) => ({
        table: segment.table,
        partitions: Array.from({ length: 12 }, (_, p) => csv([[ID(i * 100 + p), `u${i}-${p}@example.com`, 'N', '1']])),
      })),
    });
    const { runs, problems } = await requestSync(s.app.deps, { trigger: 'http' });
    expect(problems).toEqual([]);
    const entity = await s.app.deps.storage.runsTable.getEntity<Record<string, unknown>>(runs[0].runId, 'run');
    expect(Buffer.byteLength(JSON.stringify(entity))).toBeLessThan(8 * 1024);
    const [run] = await s.app.waitForRuns([runs[0].runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run.rowsRead).toBe(32 * 12);
    expect(run.usersDelivered).toBe(32 * 12);
  });

  it('drops a deeply nested JSON cell from its row only, reports unreadable CSV without the text, and leaves no working blobs behind', async () => {
    const columns = [...PROFILE_COLUMNS, { name: 'Prefs', dataType: 'JSON' }];
    const config = testConfig({ segments: [{ table: 'HighValue', brazeSegmentId: 'hv' }], fields: { FirstName: 'first_name', Prefs: 'prefs' } });
    const s = await freshStack(config);
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    await writeExport(s.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      columns,
      segments: [
        {
          table: 'HighValue',
          partitions: [
            csv([
              [ID(1), 'a@example.com', 'Ann', '1', deep],
              [ID(2), 'b@example.com', 'Bob', '2', '{"channel":"sms"}'],
            ]) +
              `"${ID(3)}","carol@example.com"x,"Carol","3","{}"\n` +
              csv([[ID(4), 'd@example.com', 'Dee', '4', '']]),
          ],
        },
      ],
    });
    const { runs } = await requestSync(s.app.deps, { trigger: 'http' });
    const [run] = await s.app.waitForRuns([runs[0].runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(rowsAccountedFor(run)).toBe(run.rowsRead);
    expect(run.rowsRejectedInput).toBe(1);
    expect(s.braze.profile(`external_id:${ID(1)}`)).toEqual({ email: 'a@example.com', first_name: 'Ann', hv: true });
    expect(s.braze.profile(`external_id:${ID(2)}`)).toMatchObject({ prefs: { channel: 'sms' } });
    const container = s.app.deps.storage.stateContainer;
    const report = (await container.getBlobClient(rejectsReportName(run.runId)).downloadToBuffer()).toString('utf8');
    expect(report).toMatch(/field_dropped,[^,]*HighValue_1\.csv,1,external_id [^,]+,"?prefs: JSON value nested deeper than 32 levels/);
    expect(report).toMatch(
      /rejected,[^,]*HighValue_1\.csv,3,,"?unreadable CSV: a quote closes a value before its end \(CSV_INVALID_CLOSING_QUOTE\) \(line 3\)/,
    );
    expect(report).not.toContain('@');
    for (const line of s.log.lines) expect(line).not.toMatch(/carol|@example\.com/i);
    // The run is over and nothing of it can be resumed: only the report stays.
    expect(await runFolderAfterCleanup(container, run.runId, [rejectsReportName(run.runId)])).toEqual([rejectsReportName(run.runId)]);
  });

  it('reads an export from its own storage account (ExportStorage), apart from the app storage', async () => {
    const exportAccount = await startAzurite();
    try {
      const s = await startIsolatedStack(azurite, { env: { ExportStorage: exportAccount.connectionString } });
      stack = s;
      const exportContainer = s.app.deps.storage.exportContainer;
      expect(exportContainer.url).not.toContain(new URL(s.app.deps.storage.stateContainer.url).host);
      await writeExport(exportContainer, {
        destination: 'BrazeExport',
        segments: [
          { table: 'HighValue', partitions: [csv([[ID(1), 'a@example.com', 'A', '1']])] },
          { table: 'Newsletter', partitions: [csv([[ID(2), 'b@example.com', 'B', '2']])] },
        ],
      });
      const { runs, problems } = await requestSync(s.app.deps, { trigger: 'http' });
      expect(problems).toEqual([]);
      const [run] = await s.app.waitForRuns([runs[0].runId], { timeoutMs: 30_000 });
      expect(run).toMatchObject({ status: 'completed', usersDelivered: 2 });
      await s.stop();
      stack = undefined;
    } finally {
      await exportAccount.stop();
    }
  });

  it('sends to Braze directly even when HTTP(S)_PROXY points elsewhere', async () => {
    const braze = new BrazeServer({ apiKey: TEST_API_KEY });
    const endpoint = await braze.start();
    const saved = { HTTP_PROXY: process.env.HTTP_PROXY, HTTPS_PROXY: process.env.HTTPS_PROXY, http_proxy: process.env.http_proxy };
    process.env.HTTP_PROXY = process.env.HTTPS_PROXY = process.env.http_proxy = 'http://127.0.0.1:9';
    try {
      const client = new BrazeClient(
        { endpoint, requestTimeoutMs: 2000, maxRetries: 0, retryDelayMs: 10, maxRetryDelayMs: 10, maxConcurrentRequests: 1, objectsPerRequest: 75 },
        new SettingApiKey(TEST_API_KEY),
        new RateLimitPacer({ reserveShare: 0, clock: systemClock }),
        systemClock,
      );
      const outcome = await client.track([{ external_id: 'p-1', first_name: 'P' }], Date.now() + 5000);
      expect(outcome.kind).toBe('accepted');
      expect(braze.profile('external_id:p-1')).toEqual({ first_name: 'P' });
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      await braze.stop();
    }
  });
});
