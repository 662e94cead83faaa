import { processRunMessage } from '../../shared/sync/processRunMessage';
import { decodeRunMessage } from '../../shared/queue/messages';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import { requestSync } from '../../shared/sync/startSync';
import { runStep } from '../../shared/sync/stepRunner';
import { startRun } from '../../shared/sync/startRun';
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

  /** A run requested with every host stopped, its start message taken off the queue. */
  async function requestedRun(env: Record<string, string>) {
    stack = await startTestStack({ env: { PROFILES_PER_SHARD: '100', ...env } });
    const deps = stack.app.deps;
    for (const host of stack.app.hosts) await host.stop();
    const profiles = makeProfiles(1, 300);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const outcome = await requestSync(deps, { trigger: 'http' });
    const runId = outcome.runs[0].runId;
    const [start] = await takeRunMessages(deps);
    expect(decodeRunMessage(start)).toMatchObject({ kind: 'startRun', runId });
    return { deps, runId, profiles, start };
  }

  async function startedRun(smallRefreshMaxBytes: string) {
    const { deps, runId, profiles, start } = await requestedRun({ SMALL_REFRESH_MAX_BYTES: smallRefreshMaxBytes });
    // One instance handles the run's start.
    await processRunMessage(deps, start);
    return { deps, runId, profiles };
  }

  /** Every copy of a step's message, each finding its step done: none changes the run, and the run completes as the export says. */
  async function copiesChangeNothing(deps: ConnectorDeps, runId: string, profiles: ReturnType<typeof makeProfiles>) {
    const run = (await deps.runs.get(runId))!;
    const copies = await takeRunMessages(deps);
    expect(copies.length).toBeGreaterThanOrEqual(4);
    for (const copy of copies) expect(await processRunMessage(deps, copy)).toEqual({ kind: 'done' });
    expect((await deps.runs.get(runId))!.batchesEnqueued).toBe(run.batchesEnqueued);
    expect((await deps.storage.batchQueue.getProperties()).approximateMessagesCount).toBe(run.batchesEnqueued);
    for (const host of stack!.app.hosts) host.start();
    const [done] = await stack!.app.waitForRuns([runId], { timeoutMs: 60_000 });
    expectCompletedWith(done, profiles.size, stack!.braze, expectedBraze([profiles]));
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
    await copiesChangeNothing(deps, runId, profiles);
  }, 90_000);

  it('an instance that works a step reads on: one step message, and every open step of the run is worked in its invocation', async () => {
    // Above the small-refresh size: the start only plans the run and sends its steps.
    const { deps, runId, profiles } = await requestedRun({ SMALL_REFRESH_MAX_BYTES: '1000', READ_ON_SECONDS: '60' });
    await startRun(deps, runId);
    const steps = await takeRunMessages(deps);
    expect(steps.map((text) => decodeRunMessage(text).kind)).toEqual(Array(4).fill('mapPartition'));
    expect(await processRunMessage(deps, steps[2])).toEqual({ kind: 'done' });
    const run = (await deps.runs.get(runId))!;
    expect(run.shards).toBeGreaterThan(1);
    expect(run.enqueueDone).toBe(true);
    expect((await deps.units.list(runId, 'map')).map((u) => u.state)).toEqual(Array(4).fill('done'));
    expect((await deps.units.list(runId, 'shard')).map((u) => u.state)).toEqual(Array(run.shards).fill('done'));
    // The other map steps' messages, and the diff steps' the phase's end sent, each find their step done.
    for (const copy of [steps[0], steps[1], steps[3]]) await deps.storage.runQueue.sendMessage(copy);
    await copiesChangeNothing(deps, runId, profiles);
  }, 90_000);

  it("late copies of a phase's steps, found done, send the next phase's steps only if no one sent them all", async () => {
    // Reading on does the steps ahead of their messages, so the messages that come after are copies of done steps.
    const { deps, runId } = await requestedRun({ SMALL_REFRESH_MAX_BYTES: '1000', READ_ON_SECONDS: '60' });
    await startRun(deps, runId);
    const steps = await takeRunMessages(deps);
    const { shards } = (await deps.runs.get(runId))!;
    // Another instance holds every diff step, so reading on stops at the end of the map phase.
    for (let s = 0; s < shards; s++) expect((await deps.units.claim(runId, 'shard', s, 'another instance', 60_000)).kind).toBe('claimed');
    expect(await processRunMessage(deps, steps[0])).toEqual({ kind: 'done' });
    expect((await deps.units.list(runId, 'map')).map((u) => u.state)).toEqual(Array(4).fill('done'));
    const diffSteps = (await takeRunMessages(deps)).map((text) => decodeRunMessage(text));
    expect(diffSteps.map((m) => m.kind)).toEqual(Array(shards).fill('diffShard'));
    expect((await deps.runs.get(runId))!.phasesSent).toBe(2);
    // The other map steps' messages come late: the diff steps were sent, none sends them again.
    for (const copy of steps.slice(1)) expect(await processRunMessage(deps, copy)).toEqual({ kind: 'done' });
    expect(await takeRunMessages(deps)).toEqual([]);
    // Had the finisher died before it recorded them sent, a copy sends them (some may be lost).
    await deps.runs.update(runId, () => ({ phasesSent: 1 }));
    expect(await processRunMessage(deps, steps[1])).toEqual({ kind: 'done' });
    expect((await takeRunMessages(deps)).map((text) => decodeRunMessage(text))).toEqual(diffSteps);
    expect((await deps.runs.get(runId))!.phasesSent).toBe(2);
  }, 90_000);

  it('reading on passes over a step another instance holds, and takes it up once that claim has run out', async () => {
    const { deps, runId, profiles } = await requestedRun({ SMALL_REFRESH_MAX_BYTES: '1000', READ_ON_SECONDS: '60' });
    await startRun(deps, runId);
    const steps = await takeRunMessages(deps);
    // Another instance is inside map step 1 (its claim held for 30 s).
    expect((await deps.units.claim(runId, 'map', 1, 'another instance', 30_000)).kind).toBe('claimed');
    expect(await processRunMessage(deps, steps[0])).toEqual({ kind: 'done' });
    // Every other map step done here, map 1 left to its holder, the next phase not begun.
    expect((await deps.units.list(runId, 'map')).map((u) => [u.index, u.state, u.owner === 'another instance'])).toEqual([
      [0, 'done', false],
      [1, 'working', true],
      [2, 'done', false],
      [3, 'done', false],
    ]);
    expect(await deps.units.list(runId, 'shard')).toEqual([]);
    expect((await deps.runs.get(runId))!.enqueueDone).toBe(false);
    // It dies; once its claim has run out (made to, here: a claim ending now), a step's message (any:
    // here a late copy of a done one) reads on into the step, and the run's reading ends.
    expect(await deps.units.renew(runId, 'map', 1, 'another instance', 0)).toBe(true);
    expect(await processRunMessage(deps, steps[3])).toEqual({ kind: 'done' });
    const map1 = (await deps.units.read(runId, 'map', 1))!;
    expect([map1.state, map1.owner === 'another instance']).toEqual(['done', false]);
    const run = (await deps.runs.get(runId))!;
    expect(run.enqueueDone).toBe(true);
    expect((await deps.units.list(runId, 'shard')).map((u) => u.state)).toEqual(Array(run.shards).fill('done'));
    for (const copy of [steps[1], steps[2]]) await deps.storage.runQueue.sendMessage(copy);
    await copiesChangeNothing(deps, runId, profiles);
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
