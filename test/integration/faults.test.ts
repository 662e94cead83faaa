import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { HttpRequest, InvocationContext } from '@azure/functions';
import { runResume } from '../../functions/runResume';
import { runStatus } from '../../functions/runStatus';
import { requestSync } from '../../shared/sync/startSync';
import { startAzurite } from '../../local/azurite';
import { BrazeServer } from '../../local/brazeServer';
import type { ApiKeySource } from '../../shared/braze/apiKey';
import { BrazeClient } from '../../shared/braze/client';
import { RateLimitPacer } from '../../shared/braze/pacer';
import { LocalFunctionApp } from '../../local/stack';
import { startTestStack, TEST_API_KEY, testConfig, RecordingLogger, type TestStack } from '../helpers/testStack';
import { deliverBatch } from '../../shared/sync/deliverBatch';
import { customerId, expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { brazeMismatches, expectExactCounts, waitFor, expectCompletedWith } from '../helpers/expectations';

const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });

async function startRun(stack: { app: LocalFunctionApp }): Promise<string> {
  const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
  expect(outcome.problems).toEqual([]);
  return outcome.runs[0].runId;
}

describe('delivery under Braze faults', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('ends with Braze equal to the export, profile by profile, through 500s, resets, hangs, HTML 502s, 429 bursts and partial errors', async () => {
    stack = await startTestStack({
      braze: {
        rateLimit: 100,
        rateWindowMs: 500,
        seed: 7,
        // Dealt from decks: one request in a hundred hangs, and so on; every third rate window
        // another tool of the workspace has spent (the run spans more than three).
        faults: { http500: 0.025, http500AfterApply: 0.025, reset: 0.02, hang: 0.01, html502: 0.01, exhaustedWindows: 0.34 },
      },
      env: {
        BRAZE_REQUEST_TIMEOUT_MS: '300',
        BRAZE_RETRY_DELAY_MS: '10',
        BRAZE_MAX_RETRY_DELAY_MS: '100',
        BRAZE_MAX_RETRIES: '8',
        BRAZE_RATE_LIMIT_RESERVE_SHARE: '0',
      },
    });
    const profiles = makeProfiles(1, 15000);
    // Rows Braze refuses one by one (2xx with errors[]).
    const refused = makeProfiles(15001, 15010);
    const refusedRows = [...refused.values()].map((p) => ({ ...p, id: `reject-${p.id}` }));
    await writeRefresh(stack.app.deps.storage.exportContainer, [...profiles.values(), ...refusedRows], '2026/11/28/0600', 3);
    const runId = await startRun(stack);
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 110_000 });

    expect(run.status).toBe('completed');
    expect(run.usersFailed).toBe(0);
    expect(run.usersRejected).toBe(10);
    expectExactCounts(run);
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
    const seen = stack.braze.stats.byStatus;
    expect(seen[500]).toBeGreaterThan(0);
    expect(seen[502]).toBeGreaterThan(0);
    expect(seen[429]).toBeGreaterThan(0);
    expect(seen[201]).toBeGreaterThan(0);
    expect(stack.app.hosts.reduce((n, h) => n + h.poisoned, 0)).toBe(0);
  }, 120_000);

  it('isolates the rows of a request Braze refuses whole (400), so the good rows still land', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 150);
    const poisoned = { ...profiles.get(customerId(40))!, id: 'bad-request-40' };
    await writeRefresh(stack.app.deps.storage.exportContainer, [...profiles.values(), poisoned], '2026/11/28/0600', 1);
    const runId = await startRun(stack);
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run.usersRejected).toBe(1);
    expect(run.usersDelivered).toBe(150);
    // Counted in rows: the profile is in both segments.
    expect(JSON.parse(run.rejectedByReason)).toEqual({ "Braze N: Invalid 'attributes' object": 2 });
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
  });

  it('hands a batch back with a visibility delay while Braze is down, instead of burning its dequeue count', async () => {
    stack = await startTestStack({
      braze: { faults: { http500: 1 } },
      env: { SENDER_BUDGET_MS: '300', BRAZE_RETRY_DELAY_MS: '50', BRAZE_MAX_RETRY_DELAY_MS: '100' },
    });
    const profiles = makeProfiles(1, 100);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    const runId = await startRun(stack);
    const started = Date.now();
    while (!stack.log.lines.some((l) => l.includes('handed back'))) {
      if (Date.now() - started > 30_000) throw new Error('no batch was handed back');
      await new Promise((r) => setTimeout(r, 50));
    }
    stack.braze.faults = {};
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run.usersDelivered).toBe(100);
    expect(stack.app.hosts.reduce((n, h) => n + h.failed, 0)).toBe(0);
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
  });

  it('halts on bad credentials with a redacted message, keeps the rest, and completes after resume', async () => {
    stack = await startTestStack({ braze: { latencyMs: 5 }, env: { BRAZE_MAX_CONCURRENT_REQUESTS: '2' } });
    const profiles = makeProfiles(1, 3000);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const runId = await startRun(stack);
    while (stack.braze.stats.objectsApplied < 300) await new Promise((r) => setTimeout(r, 10));
    // The key is revoked mid-run; Braze echoes the key it got in the 401 body.
    stack.braze.apiKey = 'rotated-key';
    const [halted] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expect(halted.status).toBe('halted');
    expect(halted.error).toMatch(/Braze answered 401: Invalid API key: \[redacted\]/);
    expect(halted.error).not.toContain(TEST_API_KEY);
    for (const line of stack.log.lines) expect(line).not.toContain(TEST_API_KEY);
    // The run is marked halted before its batches are parked: wait for every batch to be parked or recorded.
    await waitFor(async () => {
      const r = (await stack!.app.deps.runs.get(runId))!;
      return r.usersDelivered + r.usersParked === r.usersEnqueued && r.enqueueDone;
    });
    const parked = (await stack.app.deps.runs.get(runId))!;
    expect(parked.usersParked).toBeGreaterThan(0);
    expect(parked.usersFailed).toBe(0);
    const status = await runStatus(new HttpRequest({ method: 'GET', url: 'http://localhost/api/runs/x', params: { id: runId } }), context());
    expect(status.jsonBody).toMatchObject({ status: 'halted' });

    stack.braze.apiKey = TEST_API_KEY;
    const resumed = await runResume(new HttpRequest({ method: 'POST', url: 'http://localhost/api/runs/x/resume', params: { id: runId } }), context());
    expect(resumed.status).toBe(202);
    expect((resumed.jsonBody as { requeuedBatches: number }).requeuedBatches).toBeGreaterThan(0);
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expectCompletedWith(run, 3000, stack.braze, expectedBraze([profiles]));
  });

  it('re-reads a rotated key once on a 401 and carries on, without halting and without the key in any log line', async () => {
    stack = await startTestStack({ braze: { latencyMs: 5 }, env: { BRAZE_MAX_CONCURRENT_REQUESTS: '2' } });
    // A key kept elsewhere (as in Key Vault): the client holds the key it read until Braze refuses it.
    const vault = { value: TEST_API_KEY, reads: 0 };
    const known = new Set<string>();
    const source: ApiKeySource = {
      known,
      current: undefined as string | undefined,
      async get() {
        if (this.current === undefined) await this.refresh();
        return this.current!;
      },
      async refresh() {
        const before = this.current;
        vault.reads += 1;
        this.current = vault.value;
        known.add(vault.value);
        return this.current !== before;
      },
    } as ApiKeySource & { current?: string };
    const { settings, clock } = stack.app.deps;
    stack.app.deps.braze = new BrazeClient(settings.braze, source, new RateLimitPacer({ reserveShare: 0.1, clock }), clock);
    const profiles = makeProfiles(1, 3000);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const runId = await startRun(stack);
    while (stack.braze.stats.objectsApplied < 300) await new Promise((r) => setTimeout(r, 10));
    // The key is rotated: Braze takes only the new one, and the secret now holds it.
    const rotated = '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0';
    vault.value = rotated;
    stack.braze.apiKey = rotated;
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run.usersDelivered).toBe(3000);
    expectExactCounts(run);
    expect(vault.reads).toBeGreaterThanOrEqual(2);
    expect(vault.reads).toBeLessThan(10);
    expect(stack.braze.stats.byStatus[401]).toBeGreaterThan(0);
    for (const line of stack.log.lines) {
      expect(line).not.toContain(TEST_API_KEY);
      expect(line).not.toContain(rotated);
    }
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
  });

  it('takes a message delivered twice (visibility expired, pop receipt lost) without error or double counting', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 400);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.enqueueDone);
    const { batchQueue } = stack.app.deps.storage;
    const received = await batchQueue.receiveMessages({ numberOfMessages: 32 });
    expect(received.receivedMessageItems.length).toBeGreaterThan(0);
    const deps = stack.app.deps;
    for (const m of received.receivedMessageItems) {
      // Both copies arrive at the same time: one claims the batch, the other finds it claimed and
      // puts a copy back for when the claim ends; neither writes anything twice.
      const results = await Promise.all([deliverBatch(deps, m.messageText), deliverBatch(deps, m.messageText)]);
      expect(results.map((r) => r.kind).sort()).toEqual(['busy', 'done']);
      // And once more later, as a redelivery.
      expect((await deliverBatch(deps, m.messageText)).kind).toBe('duplicate');
      await batchQueue.deleteMessage(m.messageId, m.popReceipt);
    }
    stack.app.hosts[1].start();
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expectCompletedWith(run, 400, stack.braze, expectedBraze([profiles]));
  });

  it('counts a poisoned batch as failed and re-queues it on resume', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 10);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    // The sender is stopped, so the batch waits in the queue; we move it to poison as the host would after maxDequeueCount failures.
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.enqueueDone);
    const { batchQueue, batchPoisonQueue } = stack.app.deps.storage;
    const received = await batchQueue.receiveMessages({ numberOfMessages: 32 });
    for (const m of received.receivedMessageItems) {
      await batchPoisonQueue.sendMessage(m.messageText);
      await batchQueue.deleteMessage(m.messageId, m.popReceipt);
    }
    const [failed] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expect(failed.status).toBe('completed');
    expect(failed.usersFailed).toBe(10);
    expect(failed.rowsFailed).toBe(failed.rowsRead);
    expectExactCounts(failed);

    stack.app.hosts[1].start();
    const resumed = await runResume(new HttpRequest({ method: 'POST', url: 'http://localhost/api/runs/x/resume', params: { id: runId } }), context());
    expect(resumed.status).toBe(202);
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.usersDelivered === 10);
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expect(run.usersFailed).toBe(0);
    expectExactCounts(run);
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
  });

  it('waits, once a completed run is resumed, for its failed batches sent again: it completes after them, and its state holds them delivered', async () => {
    stack = await startTestStack();
    const deps = stack.app.deps;
    const profiles = makeProfiles(1, 300);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    await waitFor(async () => (await deps.runs.get(runId))!.enqueueDone);
    // Every batch goes to poison, as the host moves a message after its last dequeue.
    const { batchQueue, batchPoisonQueue } = deps.storage;
    await waitFor(async () => {
      const received = await batchQueue.receiveMessages({ numberOfMessages: 32 });
      for (const m of received.receivedMessageItems) {
        await batchPoisonQueue.sendMessage(m.messageText);
        await batchQueue.deleteMessage(m.messageId, m.popReceipt);
      }
      return (await deps.runs.get(runId))!.status === 'completed';
    }, 30_000);
    const failed = (await deps.runs.get(runId))!;
    expect(failed.usersFailed).toBe(300);
    expect(stack.braze.profiles.size).toBe(0);

    // Resumed while no sender runs: the re-queued batches wait on the queue, and so does the run.
    const resumed = await runResume(new HttpRequest({ method: 'POST', url: 'http://localhost/api/runs/x/resume', params: { id: runId } }), context());
    expect(resumed.status).toBe(202);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const waiting = (await deps.runs.get(runId))!;
    expect(waiting.status).toBe('sending');
    expect(waiting.usersParked).toBe(300);
    expect(waiting.usersFailed).toBe(0);
    const completions = () => stack!.log.records.filter((r) => r.connectorEvent === 'RunCompleted' && r.runId === runId).length;
    expect(completions()).toBe(1);

    stack.app.hosts[1].start();
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expect(run.status).toBe('completed');
    expect(run.usersDelivered).toBe(300);
    expect(run.usersFailed).toBe(0);
    expectExactCounts(run);
    expect(completions()).toBe(2);
    expect(brazeMismatches(stack.braze, expectedBraze([profiles]))).toEqual([]);
    // The state says what Braze holds: the next refresh of the same rows sends nothing.
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0700', 1);
    const [next] = await stack.app.waitForRuns([await startRun(stack)], { timeoutMs: 30_000 });
    expect(next.status).toBe('completed');
    expect(next.usersEnqueued).toBe(0);
    expect(next.rowsSkippedUnchanged).toBe(next.rowsRead);
  });

  it('completes a run whose worker is killed mid-run, with nothing lost', async () => {
    const azurite = await startAzurite();
    // Slow enough (54 requests, two at a time, 40 ms each: over a second) that the kill provably lands mid-run.
    const braze = new BrazeServer({ apiKey: TEST_API_KEY, latencyMs: 40 });
    const endpoint = await braze.start();
    const env = {
      ...process.env,
      AzureWebJobsStorage: azurite.connectionString,
      EXPORT_CONTAINER: 'customer-insights',
      BRAZE_REST_ENDPOINT: endpoint,
      BRAZE_API_KEY: TEST_API_KEY,
      SYNC_CONFIG: JSON.stringify(testConfig()),
      BRAZE_MAX_CONCURRENT_REQUESTS: '2',
      ENQUEUE_LEASE_MS: '3000',
      LOCAL_LOCK_SECONDS: '3',
      // The dead worker's batch claims run out after budget + request timeout + 10 s.
      SENDER_BUDGET_MS: '3000',
      BRAZE_REQUEST_TIMEOUT_MS: '2000',
    };
    const log = new RecordingLogger();
    // This process only triggers and observes; the functions run in worker processes.
    const observer = new LocalFunctionApp({ env, log });
    const workers: ChildProcess[] = [];
    const spawnWorker = () => {
      const child = spawn(process.execPath, [path.join(__dirname, '..', '..', 'dist', 'local', 'worker.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.resume();
      child.stderr!.resume();
      workers.push(child);
      return child;
    };
    try {
      const profiles = makeProfiles(1, 4000);
      await writeRefresh(observer.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
      const runId = await startRun({ app: observer });
      const first = spawnWorker();
      await waitFor(async () => braze.stats.objectsApplied > 500, 60_000);
      first.kill('SIGKILL');
      await new Promise((r) => first.once('exit', r));
      const appliedAtKill = braze.stats.objectsApplied;
      // Killed mid-run: some profiles had landed, not all, and the run had not ended.
      expect(appliedAtKill).toBeGreaterThan(500);
      expect(appliedAtKill).toBeLessThan(profiles.size);
      expect((await observer.deps.runs.get(runId))!.status).not.toBe('completed');
      spawnWorker();
      const [run] = await observer.waitForRuns([runId], { timeoutMs: 90_000 });
      expectCompletedWith(run, 4000, braze, expectedBraze([profiles]));
    } finally {
      for (const w of workers) w.kill('SIGKILL');
      await braze.stop();
      await azurite.stop();
    }
  }, 120_000);
});
