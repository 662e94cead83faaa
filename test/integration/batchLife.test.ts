import { deliverBatch } from '../../shared/sync/deliverBatch';
import { handlePoisonBatch } from '../../shared/sync/poisonBatch';
import { requestSync } from '../../shared/sync/startSync';
import { startTestStack, type TestStack } from '../helpers/testStack';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { brazeMismatches, expectExactCounts, waitFor, expectCompletedWith } from '../helpers/expectations';

/** Every blob under the run's folder, to show what a delivery wrote. */
async function runBlobs(stack: TestStack, runId: string): Promise<string[]> {
  const names: string[] = [];
  for await (const item of stack.app.deps.storage.stateContainer.listBlobsFlat({ prefix: `runs/${runId}/` })) names.push(item.name);
  return names.sort();
}

/** Starts a run with the senders stopped and takes its batch messages off the queue, as a host would receive them. */
async function enqueueAndTake(stack: TestStack, profiles: number): Promise<{ runId: string; messages: string[] }> {
  await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, profiles).values(), '2026/11/28/0600', 1);
  await stack.app.hosts[1].stop();
  const { runs } = await requestSync(stack.app.deps, { trigger: 'http' });
  const runId = runs[0].runId;
  await waitFor(async () => (await stack.app.deps.runs.get(runId))!.enqueueDone);
  const messages: string[] = [];
  for (;;) {
    const received = await stack.app.deps.storage.batchQueue.receiveMessages({ numberOfMessages: 32 });
    if (received.receivedMessageItems.length === 0) break;
    for (const m of received.receivedMessageItems) {
      messages.push(m.messageText);
      await stack.app.deps.storage.batchQueue.deleteMessage(m.messageId, m.popReceipt);
    }
  }
  return { runId, messages };
}

describe("a batch's life", () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('a duplicate of a settled batch that meets 5xx or 401 writes nothing, and the run ends only when every batch has', async () => {
    stack = await startTestStack({ env: { SENDER_BUDGET_MS: '300', BRAZE_MAX_RETRIES: '1' } });
    const { runId, messages } = await enqueueAndTake(stack, 2500);
    expect(messages.length).toBeGreaterThanOrEqual(2);
    const [first, ...rest] = messages;
    const settled = await deliverBatch(stack.app.deps, first);
    expect(settled.kind).toBe('done');
    const afterFirst = (await stack.app.deps.runs.get(runId))!;
    const blobsAfterFirst = await runBlobs(stack, runId);

    // The copy arrives again (an enqueuer re-run, a redelivery) while Braze is down, then with a revoked key.
    for (const trouble of ['5xx', '401'] as const) {
      if (trouble === '5xx') stack.braze.faults = { http500: 1 };
      else {
        stack.braze.faults = {};
        stack.braze.apiKey = 'revoked';
      }
      expect((await deliverBatch(stack.app.deps, first)).kind).toBe('duplicate');
    }
    // Nothing sent, nothing handed off, nothing recorded, no blob written, and the run is not halted.
    expect((await stack.app.deps.storage.batchQueue.getProperties()).approximateMessagesCount).toBe(0);
    expect(await runBlobs(stack, runId)).toEqual(blobsAfterFirst);
    const afterCopies = (await stack.app.deps.runs.get(runId))!;
    expect(afterCopies).toMatchObject({ status: 'sending', usersDelivered: afterFirst.usersDelivered, usersFailed: 0, usersParked: 0 });

    stack.braze.faults = {};
    stack.braze.apiKey = stack.env.BRAZE_API_KEY;
    await new Promise((r) => setTimeout(r, 300));
    expect((await stack.app.deps.runs.get(runId))!.status).toBe('sending');
    for (const message of rest) expect((await deliverBatch(stack.app.deps, message)).kind).toBe('done');
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expectCompletedWith(run, 2500, stack.braze, expectedBraze([makeProfiles(1, 2500)]));
  });

  it('a replay after a crash mid-hand-off finishes the hand-off, and the poison handler does the same instead of counting the batch failed', async () => {
    // Braze takes five requests per window: the rest of the batch is handed back for when the window resets.
    stack = await startTestStack({
      braze: { rateLimit: 5, rateWindowMs: 3_000 },
      env: { SENDER_BUDGET_MS: '500', BRAZE_RATE_LIMIT_RESERVE_SHARE: '0' },
    });
    const { runId, messages } = await enqueueAndTake(stack, 1200);
    const [parent, ...others] = messages;
    const deps = stack.app.deps;
    // The hand-off is recorded, then the child message cannot be sent: the sender crashes there.
    await deps.storage.batchQueue.delete();
    await expect(deliverBatch(deps, parent)).rejects.toMatchObject({ statusCode: 404 });
    await deps.storage.batchQueue.create();
    const midway = (await deps.runs.get(runId))!;
    expect(midway.usersDelivered).toBeGreaterThan(0);
    expect(midway.usersDelivered).toBeLessThan(1000);

    // The message fails its remaining tries and lands on the poison queue.
    await handlePoisonBatch(deps, parent);
    const afterPoison = (await deps.runs.get(runId))!;
    expect(afterPoison).toMatchObject({ usersDelivered: midway.usersDelivered, usersFailed: 0, usersParked: 0, status: 'sending' });
    // The hand-off went out: the child waits on the queue for the rate window to reset.
    expect((await deps.storage.batchQueue.getProperties()).approximateMessagesCount).toBe(1);
    // A later copy of the parent changes nothing either.
    expect((await deliverBatch(deps, parent)).kind).toBe('duplicate');

    stack.braze.rateLimit = 3000;
    // The child is invisible until its hand-back delay has passed; take it when it shows.
    let children = (await deps.storage.batchQueue.receiveMessages({ numberOfMessages: 32 })).receivedMessageItems;
    for (let i = 0; children.length === 0 && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      children = (await deps.storage.batchQueue.receiveMessages({ numberOfMessages: 32 })).receivedMessageItems;
    }
    expect(children.length).toBe(1);
    // The child may itself be handed back part-way (a 500 ms budget on a loaded machine): as the
    // queue would, its own hand-off is taken and delivered, until the batch is done.
    let outcome = await deliverBatch(deps, children[0].messageText);
    for (let i = 0; outcome.kind === 'deferred' && i < 50; i++) {
      let next = (await deps.storage.batchQueue.receiveMessages({ numberOfMessages: 1 })).receivedMessageItems;
      for (let j = 0; next.length === 0 && j < 100; j++) {
        await new Promise((r) => setTimeout(r, 100));
        next = (await deps.storage.batchQueue.receiveMessages({ numberOfMessages: 1 })).receivedMessageItems;
      }
      outcome = await deliverBatch(deps, next[0].messageText);
    }
    expect(outcome.kind).toBe('done');
    for (const message of others) expect((await deliverBatch(deps, message)).kind).toBe('done');
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expect(run.status).toBe('completed');
    expect(run.usersFailed).toBe(0);
    expect(run.usersDelivered).toBe(1200);
    expectExactCounts(run);
    expect(brazeMismatches(stack.braze, expectedBraze([makeProfiles(1, 1200)]))).toEqual([]);
  }, 60_000);

  it('the poison handler counts an unfinished batch failed once, keeps it for a resume, and ignores a settled one', async () => {
    stack = await startTestStack();
    const { runId, messages } = await enqueueAndTake(stack, 2500);
    const [settledOne, poisoned, ...rest] = messages;
    await deliverBatch(stack.app.deps, settledOne);
    await handlePoisonBatch(stack.app.deps, settledOne);
    await handlePoisonBatch(stack.app.deps, poisoned);
    await handlePoisonBatch(stack.app.deps, poisoned);
    for (const message of rest) await deliverBatch(stack.app.deps, message);
    const [run] = await stack.app.waitForRuns([runId], { timeoutMs: 30_000 });
    expect(run.status).toBe('completed');
    expect(run.usersFailed).toBeGreaterThan(0);
    expect(run.usersDelivered + run.usersFailed).toBe(2500);
    expectExactCounts(run);
    expect((await runBlobs(stack, runId)).filter((n) => n.includes('/parked/'))).toHaveLength(1);
  });
});
