import { LocalHttpHost } from '../../local/httpHost';
import { requestSync } from '../../shared/sync/startSync';
import { csv, writeExport } from '../helpers/exportBuilder';
import { customerId } from '../helpers/profileModel';
import { startTestStack, testConfig, type TestStack } from '../helpers/testStack';

const KEY = 'operator-function-key';
const row = (n: number) => [customerId(n), `user${n}@example.com`, `First${n}`, String(n)];

describe('where is this user? (GET /api/users/{id})', () => {
  let stack: TestStack | undefined;
  let host: LocalHttpHost | undefined;
  afterEach(async () => {
    await host?.stop();
    await stack?.stop();
  });

  it("answers from the user's shard of the delivered state: segments, the run that wrote them, an erasure; naming the user only as asked", async () => {
    stack = await startTestStack({ config: testConfig({ erasure: { table: 'Erasures' } }), env: { PROFILES_PER_SHARD: '100' } });
    host = new LocalHttpHost(KEY);
    const url = await host.start();
    const get = (path: string, key: string | null = KEY) => fetch(`${url}${path}`, { headers: key ? { 'x-functions-key': key } : {} });
    const sync = async (folder: string, erase: number[]) => {
      const members = Array.from({ length: 400 }, (_, i) => i + 1).filter((n) => !erase.includes(n));
      await writeExport(stack!.app.deps.storage.exportContainer, {
        destination: 'BrazeExport',
        segments: [
          // One user Braze refuses (the local server refuses external_ids starting "reject-").
          { table: 'HighValue', runFolder: folder, partitions: [csv([...members.map(row), ['reject-1', 'r@example.com', 'R', '1']])] },
          { table: 'Newsletter', runFolder: folder, partitions: [csv(members.filter((n) => n % 2 === 0).map(row))] },
          { table: 'Erasures', runFolder: folder, partitions: [erase.length ? csv(erase.map(row)) : ''] },
        ],
      });
      const { runs } = await requestSync(stack!.app.deps, { trigger: 'http' });
      const [run] = await stack!.app.waitForRuns([runs[0].runId], { timeoutMs: 60_000 });
      expect(run.status).toBe('completed');
      return run;
    };
    const first = await sync('2026/11/28/0600', []);
    const second = await sync('2026/11/29/0600', [7]);
    expect(second.shards).toBeGreaterThan(1);

    const answer = await get(`/api/users/${customerId(2)}?destination=BrazeExport`);
    expect(answer.status).toBe(200);
    const body = (await answer.json()) as Record<string, unknown>;
    expect(body).toEqual({
      destination: 'BrazeExport',
      instance: 'CustomerInsights_0a1b2c3d',
      user: { by: 'external_id', id: customerId(2) },
      delivered: { segments: ['ci_high_value', 'ci_newsletter'], stateRun: second.runId, refresh: '2026/11/29/0600', stateRunCreatedAt: second.createdAt },
      erased: null,
      // Only the run that changed the user: the second found nothing to send.
      runs: [
        {
          runId: first.runId,
          createdAt: first.createdAt,
          refresh: '2026/11/28/0600',
          status: 'completed',
          change: 'joins',
          attributes: ['email', 'first_name', 'loyalty_points', 'ci_high_value', 'ci_newsletter'],
        },
      ],
    });
    expect(JSON.stringify(body)).not.toContain('@');
    // Another spelling of the GUID finds the same user.
    const shouted = (await (await get(`/api/users/%7B${customerId(3).toUpperCase()}%7D?destination=BrazeExport`)).json()) as {
      delivered: { segments: string[] };
    };
    expect(shouted.delivered.segments).toEqual(['ci_high_value']);
    // An erased user: not in the state, and when and by which run it was deleted.
    expect(await (await get(`/api/users/${customerId(7)}?destination=BrazeExport`)).json()).toMatchObject({
      delivered: null,
      erased: { runId: second.runId, erasedAt: expect.any(String) },
      runs: [
        { runId: second.runId, change: 'erases', attributes: [] },
        { runId: first.runId, change: 'joins' },
      ],
    });
    // One Braze refused: sent, refused, and why; nothing delivered.
    expect(await (await get(`/api/users/reject-1?destination=BrazeExport`)).json()).toMatchObject({
      delivered: null,
      runs: [
        { runId: second.runId, change: 'joins', rejected: 'Braze: Invalid external_id' },
        { runId: first.runId, change: 'joins', rejected: 'Braze: Invalid external_id' },
      ],
    });
    // Not by e-mail over HTTP: the address would sit in the host's request logs.
    const byEmail = await get(`/api/users/${encodeURIComponent('User2@Example.com')}?destination=BrazeExport&by=email`);
    expect(byEmail.status).toBe(400);
    expect(JSON.stringify(await byEmail.json())).not.toContain('User2');
    expect((await get(`/api/users/${customerId(2)}`)).status).toBe(400);
    expect(await (await get(`/api/users/${customerId(2)}?destination=Nowhere`)).json()).toEqual({
      error: 'destination "Nowhere" is not in the mapping config',
    });
    expect((await get(`/api/users/${customerId(2)}?destination=BrazeExport`, null)).status).toBe(401);
    for (const line of stack.log.lines) expect(line).not.toMatch(/@example\.com/i);
  }, 120_000);
});
