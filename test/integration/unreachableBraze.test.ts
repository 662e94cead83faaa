import { promises as dns } from 'node:dns';
import net from 'node:net';
import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { BrazeServer } from '../../local/brazeServer';
import { resumeRun } from '../../shared/sync/resumeRun';
import { requestSync } from '../../shared/sync/startSync';
import type { RunRecord } from '../../shared/runs/runRecord';
import { brazeMismatches, expectExactCounts, waitFor } from '../helpers/expectations';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { startTestStack, TEST_API_KEY, testConfig, type TestStack } from '../helpers/testStack';

const EU_KEY = '0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d';
/** RFC 6761: names under .invalid never resolve. */
const MISSPELLED_HOST = 'rest.iad-99.braze.invalid';
/** Well under the 8 hand-backs (minutes) a wrong endpoint was retried for. */
const HALTS_WITHIN_MS = 20_000;

/** A port on loopback that nothing listens on: one the system just handed out and took back. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The per-test names of the first stack, so the app that restarts with the fixed endpoint sees the same storage. */
function sameStorage(env: Record<string, string>) {
  return {
    EXPORT_CONTAINER: env.EXPORT_CONTAINER,
    STATE_CONTAINER: env.STATE_CONTAINER ?? 'braze-connector',
    RUNS_TABLE: env.RUNS_TABLE ?? 'brazeconnectorruns',
  };
}

describe('a Braze endpoint that cannot be reached', () => {
  let azurite: AzuriteInstance;
  let eu: BrazeServer | undefined;
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
    eu = undefined;
  });

  /** Syncs the refresh; answers the run once it has stopped moving, and how long that took. */
  async function syncUntilStopped(destination: string, profiles: ReturnType<typeof makeProfiles>): Promise<{ run: RunRecord; tookMs: number }> {
    await writeRefresh(stack!.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2, destination);
    const started = Date.now();
    const outcome = await requestSync(stack!.app.deps, { trigger: 'http' });
    expect(outcome.problems).toEqual([]);
    const [run] = await stack!.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: HALTS_WITHIN_MS });
    return { run, tookMs: Date.now() - started };
  }

  /** Every batch of the halted run parks: nothing is sent, nothing is failed, all waits for the resume. */
  async function expectAllParked(runId: string, profiles: number): Promise<RunRecord> {
    await waitFor(async () => {
      const run = (await stack!.app.deps.runs.get(runId))!;
      return run.enqueueDone && run.usersParked === run.usersEnqueued;
    }, 30_000);
    const run = (await stack!.app.deps.runs.get(runId))!;
    expect(run).toMatchObject({ status: 'halted', usersEnqueued: profiles, usersParked: profiles, usersDelivered: 0, usersFailed: 0 });
    return run;
  }

  function expectNoKeyAnywhere(run: RunRecord, ...keys: string[]): void {
    const seen = [...stack!.log.lines, run.error ?? ''].filter((line) => keys.some((key) => line.includes(key)));
    expect(seen).toEqual([]);
  }

  it('halts the run at once when nothing listens at the workspace endpoint, naming host and port, and a resume after the fix delivers everything', async () => {
    const port = await closedPort();
    const base = testConfig().destinations[0];
    const config = (endpoint: string) => ({
      workspaces: { eu: { restEndpoint: endpoint, apiKeySetting: 'BRAZE_API_KEY_EU' } },
      destinations: [{ ...base, name: 'BrazeExportEU', workspace: 'eu' }],
    });
    stack = await startTestStack({ azurite, config: config(`http://127.0.0.1:${port}`), env: { BRAZE_API_KEY_EU: EU_KEY } });
    const profiles = makeProfiles(1, 1200);

    const { run: halted, tookMs } = await syncUntilStopped('BrazeExportEU', profiles);
    expect(halted.status).toBe('halted');
    expect(tookMs).toBeLessThan(HALTS_WITHIN_MS);
    expect(halted.error).toContain(`cannot connect to Braze at 127.0.0.1:${port} (ECONNREFUSED: nothing listens there)`);
    expect(halted.error).toContain('workspace "eu"');
    expect(halted.error).toContain(`POST /api/runs/${halted.runId}/resume`);
    await expectAllParked(halted.runId, profiles.size);
    expectNoKeyAnywhere(halted, EU_KEY, TEST_API_KEY);

    // The endpoint is fixed (the app restarts with the config), and the halted run is resumed.
    eu = new BrazeServer({ apiKey: EU_KEY });
    const fixed = config(await eu.start());
    const env = sameStorage(stack.env);
    await stack.stop();
    stack = await startTestStack({ azurite, config: fixed, env: { BRAZE_API_KEY_EU: EU_KEY, ...env } });
    expect((await resumeRun(stack.app.deps, halted.runId)).kind).toBe('resumed');
    const [run] = await stack.app.waitForRuns([halted.runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run).toMatchObject({ usersDelivered: profiles.size, usersParked: 0, usersFailed: 0, usersRejected: 0 });
    expectExactCounts(run);
    expect(brazeMismatches(eu, expectedBraze([profiles]))).toEqual([]);
  }, 120_000);

  it('halts the run when BRAZE_REST_ENDPOINT names a host that does not resolve, and a resume after the fix delivers everything', async () => {
    // RFC 6761: a resolver answers NXDOMAIN for .invalid. A machine whose resolver cannot answer at
    // all (EAI_AGAIN, offline) fails here rather than passing with nothing shown; the project's
    // machines and CI answer ENOTFOUND.
    const resolverSays = await dns.lookup(MISSPELLED_HOST).then(
      () => 'resolved',
      (error: NodeJS.ErrnoException) => error.code,
    );
    expect(resolverSays).toBe('ENOTFOUND');
    stack = await startTestStack({ azurite, env: { BRAZE_REST_ENDPOINT: MISSPELLED_HOST } });
    const profiles = makeProfiles(1, 900);

    const { run: halted, tookMs } = await syncUntilStopped('BrazeExport', profiles);
    expect(halted.status).toBe('halted');
    expect(tookMs).toBeLessThan(HALTS_WITHIN_MS);
    expect(halted.error).toContain(`cannot resolve Braze host ${MISSPELLED_HOST} (ENOTFOUND)`);
    expect(halted.error).toContain('BRAZE_REST_ENDPOINT');
    expect(halted.error).toContain(`POST /api/runs/${halted.runId}/resume`);
    await expectAllParked(halted.runId, profiles.size);
    expectNoKeyAnywhere(halted, TEST_API_KEY);

    // The setting is fixed: the app restarts with the default endpoint of the test stack (its local Braze).
    const env = sameStorage(stack.env);
    await stack.stop();
    stack = await startTestStack({ azurite, env });
    expect((await resumeRun(stack.app.deps, halted.runId)).kind).toBe('resumed');
    const [run] = await stack.app.waitForRuns([halted.runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run).toMatchObject({ usersDelivered: profiles.size, usersParked: 0, usersFailed: 0, usersRejected: 0 });
    expectExactCounts(run);
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
  }, 120_000);
  it('fails a reconcile at once when the endpoint refuses, naming host and port, instead of waiting for an export never asked for', async () => {
    const port = await closedPort();
    stack = await startTestStack({ azurite, env: { BRAZE_REST_ENDPOINT: `http://127.0.0.1:${port}`, RECONCILE_POLL_SECONDS: '1' } });
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 20).values(), '2026/11/28/0600', 1, 'BrazeExport');
    const started = Date.now();
    const outcome = await requestSync(stack.app.deps, { trigger: 'http', reconcile: true });
    expect(outcome.problems).toEqual([]);
    const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: HALTS_WITHIN_MS });
    expect(Date.now() - started).toBeLessThan(HALTS_WITHIN_MS);
    expect(run.status).toBe('failed');
    expect(run.error).toContain(`cannot connect to Braze at 127.0.0.1:${port} (ECONNREFUSED`);
    expectNoKeyAnywhere(run, TEST_API_KEY);
  }, 60_000);
});
