import { HttpRequest, InvocationContext } from '@azure/functions';
import { QueueServiceClient } from '@azure/storage-queue';
import { runResume } from '../../functions/runResume';
import { runStatus } from '../../functions/runStatus';
import { BrazeAuthError } from '../../shared/errors';
import { deliverBatch } from '../../shared/sync/deliverBatch';
import { handlePoisonBatch } from '../../shared/sync/poisonBatch';
import { haltRun } from '../../shared/sync/runEvents';
import { requestSync } from '../../shared/sync/startSync';
import { sweepRuns } from '../../shared/sync/sweepRuns';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import { startTestStack, type TestStack } from '../helpers/testStack';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { expectExactCounts, waitFor, expectCompletedWith } from '../helpers/expectations';

const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });
const resume = (runId: string) =>
  runResume(new HttpRequest({ method: 'POST', url: `http://localhost/api/runs/${runId}/resume`, params: { id: runId } }), context());
const status = (runId: string) => runStatus(new HttpRequest({ method: 'GET', url: `http://localhost/api/runs/${runId}`, params: { id: runId } }), context());

/** The same connector, seen from later: the sweep's clock runs ahead. */
function later(deps: ConnectorDeps, minutes: number): ConnectorDeps {
  return { ...deps, clock: { ...deps.clock, now: () => Date.now() + minutes * 60_000 } };
}

async function takeBatches(stack: TestStack): Promise<string[]> {
  const messages: string[] = [];
  for (;;) {
    const received = await stack.app.deps.storage.batchQueue.receiveMessages({ numberOfMessages: 32 });
    if (received.receivedMessageItems.length === 0) return messages;
    for (const m of received.receivedMessageItems) {
      messages.push(m.messageText);
      await stack.app.deps.storage.batchQueue.deleteMessage(m.messageId, m.popReceipt);
    }
  }
}

/** A run of 2,500 profiles whose first batch was delivered and whose others were lost (a poison handler that failed too, a message gone): nothing ends any more. */
async function runWithLostBatches(stack: TestStack): Promise<string> {
  const deps = stack.app.deps;
  await writeRefresh(deps.storage.exportContainer, makeProfiles(1, 2500).values(), '2026/11/28/0600', 1);
  await stack.app.hosts[1].stop();
  const runId = await startRun(stack);
  await waitFor(async () => (await deps.runs.get(runId))!.enqueueDone);
  const [first, ...lost] = await takeBatches(stack);
  expect(lost.length).toBeGreaterThan(0);
  expect((await deliverBatch(deps, first)).kind).toBe('done');
  return runId;
}

/** The run completed, and the batch that had ended was recognised and not sent again: each profile reached Braze once. */
async function expectLostBatchesSentOnce(stack: TestStack, runId: string): Promise<void> {
  const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
  expect(run.status).toBe('completed');
  expect(run.usersDelivered).toBe(2500);
  expectExactCounts(run);
  expect(stack.braze.stats.objectsApplied).toBe(2500);
}

async function startRun(stack: TestStack): Promise<string> {
  const { runs, problems } = await requestSync(stack.app.deps, { trigger: 'http' });
  expect(problems).toEqual([]);
  return runs[0].runId;
}

describe("a run's life", () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('stays halted when bad credentials stop it while it is still enqueueing, and completes after a resume', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 30_000);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 4);
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.status === 'enqueuing', 30_000, 5);
    // A sender meets a 401 while the enqueuer is still reading.
    await haltRun(stack.app.deps, runId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    const whenHalted = (await stack.app.deps.runs.get(runId))!;
    expect(whenHalted.enqueueDone).toBe(false);
    expect(whenHalted.status).toBe('halted');
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.enqueueDone);
    const enqueued = (await stack.app.deps.runs.get(runId))!;
    expect(enqueued.status).toBe('halted');
    expect(enqueued.error).toMatch(/then POST \/api\/runs\/.*\/resume/);

    // Its batches park while it is halted; a resume sends them.
    stack.app.hosts[1].start();
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.usersParked === 30_000, 60_000);
    expect((await resume(runId)).status).toBe(202);
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(run.usersDelivered).toBe(30_000);
    expectExactCounts(run);
  }, 120_000);

  it('sends a batch that parked just after a resume had re-queued the parked ones', async () => {
    stack = await startTestStack();
    const profiles = makeProfiles(1, 300);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.enqueueDone, 30_000);
    await haltRun(stack.app.deps, runId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    const [first, ...rest] = await takeBatches(stack);
    for (const message of rest) expect((await deliverBatch(stack.app.deps, message)).kind).toBe('parked');

    // The last sender reads the run while it is halted; the person's resume lands before that
    // sender parks its batch, so the resume's listing of parked batches cannot see it.
    const deps = stack.app.deps;
    const get = deps.runs.get.bind(deps.runs);
    let resumed = false;
    deps.runs.get = async (id: string) => {
      const seen = await get(id);
      if (!resumed && id === runId && seen?.status === 'halted') {
        resumed = true;
        expect((await resume(runId)).status).toBe(202);
      }
      return seen;
    };
    try {
      expect((await deliverBatch(deps, first)).kind).toBe('parked');
    } finally {
      delete (deps.runs as Partial<typeof deps.runs>).get;
    }
    expect(resumed).toBe(true);
    stack.app.hosts[1].start();
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expectCompletedWith(run, 300, stack.braze, expectedBraze([profiles]));
  }, 120_000);

  it('finishes a resume that failed after it had set the run sending, when the resume is asked again', async () => {
    stack = await startTestStack();
    const deps = stack.app.deps;
    const profiles = makeProfiles(1, 300);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    await waitFor(async () => (await deps.runs.get(runId))!.enqueueDone, 30_000);
    await haltRun(deps, runId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    for (const message of await takeBatches(stack)) expect((await deliverBatch(deps, message)).kind).toBe('parked');
    expect((await deps.runs.get(runId))!.usersParked).toBe(300);

    // The resume's worker sets the run sending, then cannot put the parked batches back on the
    // queue (the queue is not there for it: a real client, a queue that does not exist).
    const batchQueue = deps.storage.batchQueue;
    deps.storage.batchQueue = QueueServiceClient.fromConnectionString(stack.azurite.connectionString).getQueueClient('no-such-queue');
    try {
      await expect(resume(runId)).rejects.toMatchObject({ statusCode: 404 });
    } finally {
      deps.storage.batchQueue = batchQueue;
    }
    expect((await deps.runs.get(runId))!.status).toBe('sending');

    // Asked again, the resume finishes what the first one began.
    const again = await resume(runId);
    expect(again.status).toBe(202);
    expect(again.jsonBody).toMatchObject({ requeuedProfiles: 300 });
    stack.app.hosts[1].start();
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expectCompletedWith(run, 300, stack.braze, expectedBraze([profiles]));
    // A run sending with nothing parked is not resumed: there is nothing to finish.
    expect((await resume(runId)).status).toBe(409);
  }, 120_000);

  it('marks a run stalled when its batches stop ending, shows it, and a resume sends the lost batch without re-sending the others', async () => {
    stack = await startTestStack();
    const runId = await runWithLostBatches(stack);
    expect((await sweepRuns(later(stack.app.deps, 30))).stalled).toEqual([]);
    const swept = await sweepRuns(later(stack.app.deps, 120));
    expect(swept.stalled.map((s) => s.runId)).toEqual([runId]);
    const shown = await status(runId);
    expect(shown.jsonBody).toMatchObject({ status: 'stalled', error: expect.stringMatching(/no batch ended for \d+ minutes.*resume/) });
    expect(stack.log.lines.some((l) => l.includes(`run ${runId} stalled`))).toBe(true);

    stack.app.hosts[1].start();
    const resumed = await resume(runId);
    expect(resumed.status).toBe(202);
    expect(resumed.jsonBody).toMatchObject({ reenqueued: true });
    await expectLostBatchesSentOnce(stack, runId);
  }, 90_000);

  it('resumes a stalled run whose first resume failed before its steps were reset, when the resume is asked again', async () => {
    stack = await startTestStack();
    const deps = stack.app.deps;
    const runId = await runWithLostBatches(stack);
    expect((await sweepRuns(later(deps, 120))).stalled.map((s) => s.runId)).toEqual([runId]);

    // Storage fails the resume as it resets the run's shard steps (which re-enqueue the lost batches).
    const reset = deps.units.reset.bind(deps.units);
    deps.units.reset = () => Promise.reject(Object.assign(new Error('the table answered 503'), { statusCode: 503 }));
    try {
      await expect(resume(runId)).rejects.toThrow('the table answered 503');
    } finally {
      deps.units.reset = reset;
    }
    // Nothing of the resume took: the run is still stalled, and a resume is what it waits for.
    expect((await deps.runs.get(runId))!.status).toBe('stalled');

    stack.app.hosts[1].start();
    const again = await resume(runId);
    expect(again.status).toBe(202);
    expect(again.jsonBody).toMatchObject({ reenqueued: true });
    await expectLostBatchesSentOnce(stack, runId);
  }, 90_000);

  it("counts a superseded run's resumed batches once: copies that come after the supersede change nothing", async () => {
    stack = await startTestStack();
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, makeProfiles(1, 300).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    await waitFor(async () => (await deps.runs.get(runId))!.enqueueDone, 30_000);
    await haltRun(deps, runId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    for (const message of await takeBatches(stack)) expect((await deliverBatch(deps, message)).kind).toBe('parked');
    // Resumed, its batches go back on the queue; the senders stay down, the run stalls, and a newer
    // refresh supersedes it, counting its parked profiles failed.
    expect((await resume(runId)).status).toBe(202);
    const resumedCopies = await takeBatches(stack);
    expect(resumedCopies.length).toBeGreaterThan(0);
    expect((await sweepRuns(later(deps, 120))).stalled.map((s) => s.runId)).toEqual([runId]);
    await writeRefresh(deps.storage.exportContainer, makeProfiles(1, 300).values(), '2026/11/29/0600', 1);
    stack.app.hosts[1].start();
    const newerId = await startRun(stack);
    const [newer] = await stack.app.waitForRuns([newerId], { timeoutMs: 60_000 });
    expect(newer.status).toBe('completed');
    const superseded = (await deps.runs.get(runId))!;
    expect(superseded).toMatchObject({ status: 'superseded', usersParked: 0, usersFailed: 300 });
    // The resumed copies arrive late (a queue delivers at least once, in any order): counted already.
    for (const message of resumedCopies) expect((await deliverBatch(deps, message)).kind).toBe('duplicate');
    const after = (await deps.runs.get(runId))!;
    expect(after).toMatchObject({ status: 'superseded', usersParked: 0, usersFailed: 300, usersDelivered: 0 });
    expectExactCounts(after);
  }, 90_000);

  it('lets a newer refresh supersede a stalled run', async () => {
    stack = await startTestStack();
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 2500).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const stalledId = await startRun(stack);
    await waitFor(async () => (await stack!.app.deps.runs.get(stalledId))!.enqueueDone);
    await takeBatches(stack);
    await sweepRuns(later(stack.app.deps, 120));
    expect((await stack.app.deps.runs.get(stalledId))!.status).toBe('stalled');

    const newer = makeProfiles(1, 2600);
    await writeRefresh(stack.app.deps.storage.exportContainer, newer.values(), '2026/11/29/0600', 1);
    stack.app.hosts[1].start();
    const newerId = await startRun(stack);
    const [run] = await stack.app.waitForRuns([newerId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect((await stack.app.deps.runs.get(stalledId))!).toMatchObject({ status: 'superseded', supersededBy: newerId });
    expect(stack.braze.profiles.size).toBe(expectedBraze([newer]).size);
  }, 90_000);

  it('refuses to resume a run once a newer run has written the destination state, and says why', async () => {
    stack = await startTestStack();
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 2500).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const olderId = await startRun(stack);
    await waitFor(async () => (await stack!.app.deps.runs.get(olderId))!.enqueueDone);
    const [poisoned, ...others] = await takeBatches(stack);
    await handlePoisonBatch(stack.app.deps, poisoned);
    for (const message of others) await deliverBatch(stack.app.deps, message);
    const [older] = await stack.app.waitForRuns([olderId], { timeoutMs: 30_000 });
    expect(older).toMatchObject({ status: 'completed' });
    expect(older.usersFailed).toBeGreaterThan(0);

    stack.app.hosts[1].start();
    // The newer run's finalizer dies between completing it and letting go of the destination (the
    // sweep frees it later): the lock still names a run that has ended.
    const destinations = stack.app.deps.destinations;
    const release = destinations.release.bind(destinations);
    destinations.release = async (path, runId) => (runId === olderId ? release(path, runId) : undefined);
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 2400).values(), '2026/11/29/0600', 1);
    const newerId = await startRun(stack);
    expect((await stack.app.waitForRuns([newerId], { timeoutMs: 30_000 }))[0].status).toBe('completed');
    expect((await destinations.lock((await stack.app.deps.runs.get(newerId))!.modelJsonPath)).runId).toBe(newerId);

    const refused = await resume(olderId);
    expect(refused.status).toBe(409);
    expect(JSON.stringify(refused.jsonBody)).toContain(`run ${newerId} synced a newer refresh`);
    expect((await stack.app.deps.storage.batchQueue.getProperties()).approximateMessagesCount).toBe(0);
    expect((await stack.app.deps.runs.get(olderId))!.status).toBe('completed');
  }, 90_000);

  it('sends every queue message without an expiry', async () => {
    stack = await startTestStack();
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 100).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[0].stop();
    await stack.app.hosts[1].stop();
    const runId = await startRun(stack);
    const [startMessage] = (await stack.app.deps.storage.runQueue.peekMessages()).peekedMessageItems;
    expect(startMessage.expiresOn.getUTCFullYear()).toBeGreaterThan(9000);
    stack.app.hosts[0].start();
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))!.enqueueDone);
    const [batch] = (await stack.app.deps.storage.batchQueue.peekMessages()).peekedMessageItems;
    expect(batch.expiresOn.getUTCFullYear()).toBeGreaterThan(9000);
  });
});
