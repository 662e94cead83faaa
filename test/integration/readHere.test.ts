import { processRunMessage } from '../../shared/sync/processRunMessage';
import { decodeRunMessage } from '../../shared/queue/messages';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import { requestSync } from '../../shared/sync/startSync';
import { runStep } from '../../shared/sync/stepRunner';
import { expectCompletedWith } from '../helpers/expectations';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { startTestStack, type TestStack } from '../helpers/testStack';

/** The run queue's messages, taken off it: what an instance would receive. */
async function takeRunMessages(deps: ConnectorDeps): Promise<string[]> {
  const texts: string[] = [];
  for (;;) {
    const received = await deps.storage.runQueue.receiveMessages({ numberOfMessages: 32 });
    if (received.receivedMessageItems.length === 0) return texts;
    for (const m of received.receivedMessageItems) {
      texts.push(m.messageText);
      await deps.storage.runQueue.deleteMessage(m.messageId, m.popReceipt);
    }
  }
}

describe('a small refresh is read by the instance that has it', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  async function startedRun(smallRefreshMaxBytes: string) {
    stack = await startTestStack({ env: { SMALL_REFRESH_MAX_BYTES: smallRefreshMaxBytes, PROFILES_PER_SHARD: '100' } });
    const deps = stack.app.deps;
    for (const host of stack.app.hosts) await host.stop();
    const profiles = makeProfiles(1, 300);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const outcome = await requestSync(deps, { trigger: 'http' });
    const runId = outcome.runs[0].runId;
    const [start] = await takeRunMessages(deps);
    expect(decodeRunMessage(start)).toMatchObject({ kind: 'startRun', runId });
    // One instance handles the run's start.
    await processRunMessage(deps, start);
    return { deps, runId, profiles };
  }

  it('works every step in the invocation that starts the run, the queued copies finding them done', async () => {
    const { deps, runId, profiles } = await startedRun(String(8 * 1024 * 1024));
    const run = (await deps.runs.get(runId))!;
    // Every map step and every diff step (several shards) done, the batches on the queue: no hop waited for.
    expect(run.shards).toBeGreaterThan(1);
    expect(run.enqueueDone).toBe(true);
    expect((await deps.units.list(runId, 'map')).every((u) => u.state === 'done')).toBe(true);
    expect((await deps.units.list(runId, 'shard')).map((u) => u.state)).toEqual(Array(run.shards).fill('done'));
    // The steps' messages went to the queue as always: each copy finds its step done and changes nothing.
    const copies = await takeRunMessages(deps);
    expect(copies.length).toBeGreaterThanOrEqual(4);
    const enqueued = run.batchesEnqueued;
    for (const copy of copies) expect(await processRunMessage(deps, copy)).toEqual({ kind: 'done' });
    expect((await deps.runs.get(runId))!.batchesEnqueued).toBe(enqueued);
    expect((await deps.storage.batchQueue.getProperties()).approximateMessagesCount).toBe(enqueued);
    for (const host of stack!.app.hosts) host.start();
    const [done] = await stack!.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expectCompletedWith(done, profiles.size, stack!.braze, expectedBraze([profiles]));
  }, 90_000);

  it('a copy of a step that finds it done sends nothing while the rest of its phase is still to do', async () => {
    // Else, with one instance reading ahead of the messages, every late copy would send the phase's other steps again.
    const { deps, runId } = await startedRun('0');
    expect((await takeRunMessages(deps)).map((text) => decodeRunMessage(text).kind)).toEqual(Array(4).fill('mapPartition'));
    expect(await runStep(deps, runId, 'map', 0)).toEqual({ kind: 'done' });
    expect(await runStep(deps, runId, 'map', 0)).toEqual({ kind: 'done' });
    expect(await takeRunMessages(deps)).toEqual([]);
    // Once the phase is done, a copy moves the run on (its finisher may have died before it could).
    for (const p of [1, 2, 3]) await deps.units.claim(runId, 'map', p, 'someone', 60_000);
    for (const p of [1, 2, 3]) await deps.units.finish(runId, 'map', p, 'someone', (await deps.units.read(runId, 'map', 0))!.totals!);
    expect(await runStep(deps, runId, 'map', 0)).toEqual({ kind: 'done' });
    const run = (await deps.runs.get(runId))!;
    expect((await takeRunMessages(deps)).map((text) => decodeRunMessage(text).kind)).toEqual(Array(run.shards).fill('diffShard'));
  });

  it('leaves every step to the queue above SMALL_REFRESH_MAX_BYTES', async () => {
    const { deps, runId } = await startedRun('1000');
    const run = (await deps.runs.get(runId))!;
    expect(run.enqueueDone).toBe(false);
    expect(await deps.units.list(runId, 'map')).toEqual([]);
    const steps = (await takeRunMessages(deps)).map((text) => decodeRunMessage(text).kind);
    expect(steps).toEqual(Array(4).fill('mapPartition'));
  });
});
