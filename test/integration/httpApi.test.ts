import { runListOptions } from '../../functions/runList';
import { runRejectsOptions } from '../../functions/runRejects';
import { LocalHttpHost } from '../../local/httpHost';
import { rejectsReportName } from '../../shared/runs/runBlobs';
import { requestSync } from '../../shared/sync/startSync';
import { startTestStack, type TestStack } from '../helpers/testStack';
import { csv, writeExport } from '../helpers/exportBuilder';
import { makeProfiles, writeRefresh } from '../helpers/profileModel';
import { waitFor } from '../helpers/expectations';

const KEY = 'operator-function-key';
const ID = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

describe('run history and reports over HTTP (function key)', () => {
  let stack: TestStack | undefined;
  let host: LocalHttpHost | undefined;
  let url = '';
  const get = (path: string, key: string | null = KEY) => fetch(`${url}${path}`, { headers: key ? { 'x-functions-key': key } : {} });

  afterEach(async () => {
    await host?.stop();
    await stack?.stop();
    stack = undefined;
    host = undefined;
  });

  async function start(options: Parameters<typeof startTestStack>[0] = {}) {
    stack = await startTestStack(options);
    host = new LocalHttpHost(KEY);
    url = await host.start();
    return stack;
  }

  it("lists runs newest first, filtered and paged, and streams a run's rejects report", async () => {
    const s = await start();
    const container = s.app.deps.storage.exportContainer;
    const runIds: string[] = [];
    for (const [i, folder] of ['2026/11/26/0600', '2026/11/27/0600', '2026/11/28/0600'].entries()) {
      await writeExport(container, {
        destination: 'BrazeExport',
        segments: [
          {
            table: 'HighValue',
            runFolder: folder,
            partitions: [
              csv([
                [ID(1), 'a@example.com', 'A', String(i)],
                ['', '', 'Nobody', '1'],
              ]),
            ],
          },
          { table: 'Newsletter', runFolder: folder, partitions: [csv([[ID(2), 'b@example.com', 'B', '2']])] },
        ],
      });
      const { runs } = await requestSync(s.app.deps, { trigger: 'http' });
      runIds.push(runs[0].runId);
      await s.app.waitForRuns([runs[0].runId], { timeoutMs: 30_000 });
    }
    expect((await get('/api/runs', null)).status).toBe(401);
    expect((await get('/api/runs', 'wrong')).status).toBe(401);

    const all = (await (await get('/api/runs')).json()) as { runs: { runId: string; status: string }[]; next?: string };
    expect(all.runs.map((r) => r.runId)).toEqual([...runIds].reverse());
    expect(all.next).toBeUndefined();
    const first = (await (await get('/api/runs?limit=2')).json()) as { runs: { runId: string }[]; next: string };
    expect(first.runs.map((r) => r.runId)).toEqual([runIds[2], runIds[1]]);
    const second = (await (await get(`/api/runs?limit=2&cursor=${first.next}`)).json()) as { runs: { runId: string }[]; next?: string };
    expect(second.runs.map((r) => r.runId)).toEqual([runIds[0]]);
    expect(second.next).toBeUndefined();
    expect(((await (await get('/api/runs?status=completed&destination=BrazeExport')).json()) as { runs: unknown[] }).runs).toHaveLength(3);
    expect(((await (await get('/api/runs?status=halted')).json()) as { runs: unknown[] }).runs).toHaveLength(0);
    expect(((await (await get('/api/runs?destination=Nope')).json()) as { runs: unknown[] }).runs).toHaveLength(0);
    for (const bad of ['?limit=0', '?limit=x', '?status=sleeping', '?extra=1', '?cursor=bm9wZQ']) expect((await get(`/api/runs${bad}`)).status).toBe(400);
    // The answer names the bad value and what is allowed; the function key as ?code= is no bad key.
    const sleeping = (await (await get('/api/runs?status=sleeping')).json()) as { error: string };
    expect(sleeping.error).toMatch(/status: must be one of .*"completed".* \(received "sleeping"\)/);
    expect((await get('/api/runs?code=anything-the-host-checked')).status).toBe(200);

    const report = await get(`/api/runs/${runIds[2]}/rejects`);
    expect(report.status).toBe(200);
    expect(report.headers.get('content-type')).toMatch(/text\/csv/);
    const text = await report.text();
    const stored = (await s.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(runIds[2])).downloadToBuffer()).toString('utf8');
    expect(text).toBe(stored);
    expect(text).toMatch(/^outcome,source,row,identifier,reason\nrejected,.*no usable identifier/);
    expect((await get(`/api/runs/${runIds[2]}/rejects`, null)).status).toBe(401);
    expect((await get('/api/runs/r-000000000000000000000000/rejects')).status).toBe(404);
    expect((await get("/api/runs/r-1'%20or%20true/rejects")).status).toBe(400);
    for (const options of [runListOptions, runRejectsOptions]) expect(options.authLevel).toBe('function');
  });

  it('shows progress while a run goes: rows read while enqueueing, profiles pending and an ETA while sending', async () => {
    const s = await start({ braze: { latencyMs: 30 }, env: { BRAZE_MAX_CONCURRENT_REQUESTS: '1', ENQUEUE_LEASE_MS: '3000' } });
    await writeRefresh(s.app.deps.storage.exportContainer, makeProfiles(1, 60_000).values(), '2026/11/28/0600', 4);
    await s.app.hosts[1].stop();
    const { runs } = await requestSync(s.app.deps, { trigger: 'http' });
    const runId = runs[0].runId;
    type Status = { status: string; progress: { rowsRead: number; profilesPending?: number; etaSeconds?: number; profilesDelivered: number } };
    const status = async () => (await (await get(`/api/runs/${runId}`)).json()) as Status;
    let whileReading: Status | undefined;
    await waitFor(
      async () => {
        const now = await status();
        if (now.status === 'enqueuing' && now.progress.rowsRead > 0) whileReading = now;
        return whileReading !== undefined || now.status === 'sending';
      },
      60_000,
      20,
    );
    expect(whileReading).toBeDefined();
    expect(whileReading!.progress.profilesPending).toBeUndefined();
    await waitFor(async () => (await status()).status === 'sending', 60_000);
    s.app.hosts[1].start();
    await waitFor(async () => (await status()).progress.profilesDelivered > 0, 60_000);
    const sending = await status();
    expect(sending.progress.profilesPending).toBeGreaterThan(0);
    expect(sending.progress.etaSeconds).toBeGreaterThan(0);
  }, 90_000);
});
