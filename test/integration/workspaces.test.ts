import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { BrazeServer } from '../../local/brazeServer';
import { loadSyncConfig, parseSyncConfig } from '../../shared/config/syncConfig';
import { createConnector } from '../../shared/sync/connector';
import { resumeRun } from '../../shared/sync/resumeRun';
import { requestSync } from '../../shared/sync/startSync';
import { brazeMismatches, expectExactCounts } from '../helpers/expectations';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { startTestStack, TEST_API_KEY, testConfig, type TestStack } from '../helpers/testStack';

const EU_KEY = '0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d';
const WRONG_KEY = 'ffffffff-eeee-4ddd-8ccc-bbbbbbbbbbbb';

function twoWorkspaceConfig(euEndpoint: string) {
  const base = testConfig().destinations[0];
  return {
    workspaces: { eu: { restEndpoint: euEndpoint, apiKeySetting: 'BRAZE_API_KEY_EU' } },
    destinations: [base, { ...base, name: 'BrazeExportEU', workspace: 'eu' }],
  };
}

describe('several Braze workspaces', () => {
  let azurite: AzuriteInstance;
  let eu: BrazeServer;
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
    await eu?.stop();
  });

  it('sends each destination to its own workspace; a wrong key halts only the runs of its workspace, and a resume with the right key completes them', async () => {
    eu = new BrazeServer({ apiKey: EU_KEY });
    const config = twoWorkspaceConfig(await eu.start());
    stack = await startTestStack({ azurite, config, env: { BRAZE_API_KEY_EU: WRONG_KEY } });
    const container = stack.app.deps.storage.exportContainer;
    const usProfiles = makeProfiles(1, 1500);
    const euProfiles = makeProfiles(5001, 6200);
    await writeRefresh(container, usProfiles.values(), '2026/11/28/0600', 2, 'BrazeExport');
    await writeRefresh(container, euProfiles.values(), '2026/11/28/0600', 2, 'BrazeExportEU');
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    expect(outcome.problems).toEqual([]);
    const runOf = (name: string) => outcome.runs.find((r) => r.destination === name)!.runId;
    const [us, euRun] = await stack.app.waitForRuns([runOf('BrazeExport'), runOf('BrazeExportEU')], { timeoutMs: 90_000 });

    // The default workspace's run completes, with its profiles and no others.
    expect(us.status).toBe('completed');
    expectExactCounts(us);
    expect(brazeMismatches(stack.braze, expectedBraze([usProfiles]))).toEqual([]);
    expect(stack.braze.profiles.size).toBe(usProfiles.size);
    // The other workspace refused the key: its run halts, nothing landed, and the key is in no log line.
    expect(euRun.status).toBe('halted');
    expect(euRun.error).toMatch(/401/);
    expect(euRun.error).toMatch(/Fix the API key of Braze workspace "eu"/);
    expect(eu.stats.objectsApplied).toBe(0);
    expect(eu.stats.byStatus[401]).toBeGreaterThan(0);
    expect(stack.log.lines.filter((line) => line.includes(WRONG_KEY) || line.includes(TEST_API_KEY))).toEqual([]);

    // The key is fixed (the app restarts with the setting), and the halted run is resumed.
    await stack.stop();
    stack = await startTestStack({ azurite, config, env: { BRAZE_API_KEY_EU: EU_KEY, ...pick(stack.env) } });
    expect((await resumeRun(stack.app.deps, euRun.runId)).kind).toBe('resumed');
    const [resumed] = await stack.app.waitForRuns([euRun.runId], { timeoutMs: 90_000 });
    expect(resumed.status).toBe('completed');
    expectExactCounts(resumed);
    expect(brazeMismatches(eu, expectedBraze([euProfiles]))).toEqual([]);
    expect(eu.profiles.size).toBe(euProfiles.size);
    // Each workspace holds its own destination only.
    expect(stack.braze.profiles.size).toBe(0);
  }, 150_000);

  it('packs each workspace to its own objects per request', async () => {
    eu = new BrazeServer({ apiKey: EU_KEY });
    const config = twoWorkspaceConfig(await eu.start());
    config.workspaces.eu = { ...config.workspaces.eu, objectsPerRequest: 50 } as typeof config.workspaces.eu;
    stack = await startTestStack({ azurite, config, env: { BRAZE_API_KEY_EU: EU_KEY } });
    expect(stack.app.deps.brazeFor('eu').objectsPerRequest).toBe(50);
    expect(stack.app.deps.brazeFor(undefined).objectsPerRequest).toBe(75);
    expect(() => parseSyncConfig(JSON.stringify({ ...config, workspaces: { eu: { ...config.workspaces.eu, objectsPerRequest: 76 } } }), 'SYNC_CONFIG')).toThrow(
      /objectsPerRequest/,
    );
  });

  it('names what is wrong with a workspace in the mapping config', () => {
    const base = testConfig().destinations[0];
    const parse = (config: unknown) => () => parseSyncConfig(JSON.stringify(config), 'SYNC_CONFIG');
    expect(parse({ destinations: [{ ...base, workspace: 'eu' }] })).toThrow(/destinations\.0\.workspace: "eu" is not one of the configured workspaces/);
    expect(parse({ workspaces: { eu: { restEndpoint: 'rest.fra-01.braze.eu' } }, destinations: [base] })).toThrow(
      /workspaces\.eu.*exactly one of apiKeySetting and apiKeySecretUri/,
    );
    expect(parse({ workspaces: { eu: { restEndpoint: 'http://rest.fra-01.braze.eu', apiKeySetting: 'K' } }, destinations: [base] })).toThrow(
      /workspaces\.eu\.restEndpoint: plain http is only allowed for loopback/,
    );
    expect(
      loadSyncConfig({ inline: JSON.stringify({ workspaces: { eu: { restEndpoint: 'rest.fra-01.braze.eu', apiKeySetting: 'K' } }, destinations: [base] }) })
        .workspaces.eu.restEndpoint,
    ).toBe('rest.fra-01.braze.eu');
    // A key setting that is not there stops the app at start, naming it.
    const config = parseSyncConfig(
      JSON.stringify({ workspaces: { eu: { restEndpoint: 'rest.fra-01.braze.eu', apiKeySetting: 'BRAZE_API_KEY_EU' } }, destinations: [base] }),
      'SYNC_CONFIG',
    );
    expect(() =>
      createConnector({
        env: {
          AzureWebJobsStorage: azurite.connectionString,
          EXPORT_CONTAINER: 'customer-insights',
          BRAZE_REST_ENDPOINT: 'rest.iad-03.braze.com',
          BRAZE_API_KEY: 'k',
          SYNC_CONFIG: JSON.stringify(config),
        },
        config,
      }),
    ).toThrow(/workspace "eu" takes its key from app setting BRAZE_API_KEY_EU, which is not set/);
  });
});

/** The per-test names of the first stack (container, table, state container), so the second app sees the same storage. */
function pick(env: Record<string, string>) {
  return {
    EXPORT_CONTAINER: env.EXPORT_CONTAINER,
    STATE_CONTAINER: env.STATE_CONTAINER ?? 'braze-connector',
    RUNS_TABLE: env.RUNS_TABLE ?? 'brazeconnectorruns',
  };
}
