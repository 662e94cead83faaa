import { readFileSync } from 'node:fs';
import path from 'node:path';
import { connectorEvents, recordFields, type ConnectorRecord } from '../../shared/telemetry';
import { deliverBatch } from '../../shared/sync/deliverBatch';
import { handlePoisonBatch } from '../../shared/sync/poisonBatch';
import { requestSync } from '../../shared/sync/startSync';
import { startTestStack, TEST_API_KEY, type TestStack } from '../helpers/testStack';
import { makeProfiles, writeRefresh } from '../helpers/profileModel';
import { waitFor } from '../helpers/expectations';

type Named<N extends ConnectorRecord['connectorEvent']> = Extract<ConnectorRecord, { connectorEvent: N }>;
function recordsNamed<N extends ConnectorRecord['connectorEvent']>(stack: TestStack, name: N): Named<N>[] {
  return stack.log.records.filter((r): r is Named<N> => r.connectorEvent === name);
}

/** Nothing that identifies a person or the key, in any record; and no field the queries could not know of (recordFields, which infra.test.ts holds the workbook and alerts against). */
function expectNoPii(stack: TestStack) {
  for (const record of stack.log.records) {
    const known = new Set<string>(['connectorEvent', ...recordFields[record.connectorEvent]]);
    expect({ event: record.connectorEvent, unknown: Object.keys(record).filter((k) => !known.has(k)) }).toEqual({ event: record.connectorEvent, unknown: [] });
  }
  const text = JSON.stringify(stack.log.records);
  expect(text).not.toContain('@');
  expect(text).not.toContain(TEST_API_KEY);
  expect(text).not.toMatch(/First\d+|00000000-0000-4000-8000/);
}

describe('run records an operator can query', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('tell a run from queueing to completion, with counts that add up to the run record', async () => {
    stack = await startTestStack();
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 3000).values(), '2026/11/28/0600', 2);
    const { runs } = await requestSync(stack.app.deps, { trigger: 'http' });
    const [run] = await stack.app.waitForRuns([runs[0].runId], { timeoutMs: 60_000 });
    await waitFor(() => recordsNamed(stack!, 'RunCompleted').length === 1);
    expect(recordsNamed(stack, 'RunQueued')).toEqual([
      { connectorEvent: 'RunQueued', runId: run.runId, destination: 'BrazeExport', trigger: 'http', refresh: '2026/11/28/0600', force: false },
    ]);
    expect(recordsNamed(stack, 'RunEnqueued')).toEqual([
      expect.objectContaining({ runId: run.runId, rowsRead: run.rowsRead, profilesEnqueued: 3000, batches: run.batchesEnqueued }),
    ]);
    const batches = recordsNamed(stack, 'BatchEnded');
    expect(batches).toHaveLength(run.batchesEnqueued);
    expect(batches.reduce((n, b) => n + b.delivered, 0)).toBe(run.usersDelivered);
    expect(batches.reduce((n, b) => n + b.brazeRequests, 0)).toBe(run.brazeRequests);
    for (const batch of batches) {
      expect(batch.ending).toBe('settled');
      expect(batch.queueLagMs).toBeGreaterThanOrEqual(0);
      expect(batch.durationMs).toBeGreaterThanOrEqual(0);
    }
    expect(recordsNamed(stack, 'RunCompleted')[0]).toMatchObject({
      runId: run.runId,
      rowsRead: run.rowsRead,
      rowsDelivered: run.rowsDelivered,
      profilesDelivered: 3000,
      brazeRequests: run.brazeRequests,
      dataPointsSent: run.dataPointsSent,
    });
    expect(recordsNamed(stack, 'RunCompleted')[0].durationMs).toBeGreaterThan(0);
    expectNoPii(stack);
  });

  it('name a poisoned batch, and the 429s a batch met on its way', async () => {
    // Another tool of the workspace spends every window: each request meets a 429, and the batch is handed back when its budget ends.
    stack = await startTestStack({
      braze: { rateLimit: 5, rateWindowMs: 1000, faults: { exhaustedWindows: 1 } },
      env: { BRAZE_RATE_LIMIT_RESERVE_SHARE: '0', SENDER_BUDGET_MS: '3000' },
    });
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 2500).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const { runs } = await requestSync(stack.app.deps, { trigger: 'http' });
    const runId = runs[0].runId;
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.enqueueDone);
    const messages = (await stack.app.deps.storage.batchQueue.receiveMessages({ numberOfMessages: 32 })).receivedMessageItems.map((m) => m.messageText);
    expect(messages.length).toBeGreaterThanOrEqual(2);
    await handlePoisonBatch(stack.app.deps, messages[0]);
    expect(recordsNamed(stack, 'BatchPoisoned')).toEqual([expect.objectContaining({ runId, profiles: expect.any(Number) })]);
    await deliverBatch(stack.app.deps, messages[1]);
    const [batch] = recordsNamed(stack, 'BatchEnded');
    expect(batch).toMatchObject({ runId, ending: expect.stringMatching(/settled|deferred/) });
    expect(batch.http429).toBeGreaterThan(0);
    expectNoPii(stack);
  });

  it('name a halt with the Braze status and the redacted reason', async () => {
    stack = await startTestStack();
    stack.braze.apiKey = 'another-key';
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 100).values(), '2026/11/28/0600', 1);
    const { runs } = await requestSync(stack.app.deps, { trigger: 'http' });
    const [run] = await stack.app.waitForRuns([runs[0].runId], { timeoutMs: 30_000 });
    expect(run.status).toBe('halted');
    // The record follows the status change by a moment.
    await waitFor(() => recordsNamed(stack!, 'RunHalted').length > 0);
    expect(recordsNamed(stack, 'RunHalted')).toEqual([
      expect.objectContaining({ runId: run.runId, destination: 'BrazeExport', brazeStatus: 401, reason: expect.stringContaining('[redacted]') }),
    ]);
    expectNoPii(stack);
  });

  it('are the ones the alert rules query', () => {
    const template = readFileSync(path.join(__dirname, '..', '..', 'infra', 'main.json'), 'utf8');
    // In the compiled queries every record name stands quoted: \"RunFailed\".
    const queried = [...template.matchAll(/\\"((?:Run|Batch)[A-Za-z]+)\\"/g)].map((m) => m[1]);
    expect(queried.length).toBeGreaterThan(0);
    for (const name of queried) expect(connectorEvents).toContain(name);
  });
});
