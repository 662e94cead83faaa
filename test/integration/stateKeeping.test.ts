import { BrazeAuthError } from '../../shared/errors';
import { startRun } from '../../shared/sync/startRun';
import { haltRun } from '../../shared/sync/runEvents';
import { requestSync } from '../../shared/sync/startSync';
import { sweepRuns } from '../../shared/sync/sweepRuns';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import { previewReportName } from '../../shared/runs/runBlobs';
import { stateFolder } from '../../shared/state/deliveredState';
import { stacksOnSharedAzurite, type TestStack } from '../helpers/testStack';
import { makeProfiles, writeRefresh, type ModelProfile } from '../helpers/profileModel';
import { waitFor } from '../helpers/expectations';

async function requestRun(stack: TestStack, options: { dryRun?: boolean } = {}): Promise<string> {
  const { runs, problems } = await requestSync(stack.app.deps, { trigger: 'http', ...options });
  expect(problems).toEqual([]);
  return runs[0].runId;
}

/** The run folders under `state/<destination>/`. */
async function stateFolders(stack: TestStack): Promise<string[]> {
  const folders = new Set<string>();
  for await (const item of stack.app.deps.storage.stateContainer.listBlobsFlat({ prefix: 'state/' }))
    folders.add(`${item.name.split('/').slice(0, 3).join('/')}/`);
  return [...folders].sort();
}

/** The same connector, seen from later: the sweep's clock runs ahead. */
function later(deps: ConnectorDeps, minutes: number): ConnectorDeps {
  return { ...deps, clock: { ...deps.clock, now: () => Date.now() + minutes * 60_000 } };
}

const refresh1 = makeProfiles(1, 300);
const refresh2 = new Map<string, ModelProfile>([...makeProfiles(31, 330)].map(([id, p]) => [id, { ...p, points: p.points + 1 }]));

describe('delivered state: read once, kept while read, never left behind', () => {
  const stacks = stacksOnSharedAzurite();
  let stack: TestStack | undefined;

  it('deletes the state a superseded run wrote', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    await stack.app.hosts[1].stop();
    const haltedId = await requestRun(stack);
    await waitFor(async () => (await deps.runs.get(haltedId))!.enqueueDone, 60_000);
    const halted = (await deps.runs.get(haltedId))!;
    // Its diff steps wrote their shards' next state.
    expect(await stateFolders(stack)).toEqual([stateFolder(halted.modelJsonPath, haltedId)]);
    await haltRun(deps, haltedId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));

    await writeRefresh(deps.storage.exportContainer, refresh2.values(), '2026/11/29/0600');
    stack.app.hosts[1].start();
    const newerId = await requestRun(stack);
    const [newer] = await stack.app.waitForRuns([newerId], { timeoutMs: 60_000 });
    expect(newer.status).toBe('completed');
    expect((await deps.runs.get(haltedId))!.status).toBe('superseded');
    expect(await stateFolders(stack)).toEqual([stateFolder(newer.modelJsonPath, newerId)]);
  }, 120_000);

  it('diffs a dry run against the state it was planned on, while a real run replaces it, and the sweep deletes that state after', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    const container = deps.storage.exportContainer;
    await writeRefresh(container, refresh1.values(), '2026/11/28/0600');
    const [first] = await stack.app.waitForRuns([await requestRun(stack)], { timeoutMs: 60_000 });
    expect(first.status).toBe('completed');

    // A dry run of refresh 2 is planned on refresh 1's state; its steps wait (their messages are held back).
    await writeRefresh(container, refresh2.values(), '2026/11/29/0600');
    await stack.app.hosts[0].stop();
    const dryId = await requestRun(stack, { dryRun: true });
    expect((await startRun(deps, dryId)).kind).toBe('done');
    await deps.storage.runQueue.clearMessages();

    // Meanwhile the real run of refresh 2 completes and replaces refresh 1's state.
    stack.app.hosts[0].start();
    const [real] = await stack.app.waitForRuns([await requestRun(stack)], { timeoutMs: 60_000 });
    expect(real.status).toBe('completed');
    expect((await deps.destinations.statePointer(real.modelJsonPath))?.runId).toBe(real.runId);
    expect(await stateFolders(stack)).toEqual([stateFolder(first.modelJsonPath, first.runId), stateFolder(real.modelJsonPath, real.runId)].sort());

    // The dry run's steps go on: its preview is what refresh 2 changes against refresh 1, what the real run sent.
    expect((await startRun(deps, dryId)).kind).toBe('done');
    const [dry] = await stack.app.waitForRuns([dryId], { timeoutMs: 60_000 });
    expect(dry.status).toBe('completed');
    expect(dry.usersEnqueued).toBe(real.usersEnqueued);
    expect(dry.exitsEnqueued).toBe(real.exitsEnqueued);
    expect(dry.rowsSkippedUnchanged).toBe(real.rowsSkippedUnchanged);
    const preview = JSON.parse((await deps.storage.stateContainer.getBlobClient(previewReportName(dryId)).downloadToBuffer()).toString('utf8')) as {
      profiles: { wouldSend: number; leaving: number };
    };
    expect(preview.profiles).toEqual({ wouldSend: real.usersEnqueued, leaving: real.exitsEnqueued });

    // Nobody reads refresh 1's state any more: the sweep deletes it, and only that.
    const swept = await sweepRuns(deps);
    expect(swept.statesDeleted).toEqual([first.runId]);
    expect(await stateFolders(stack)).toEqual([stateFolder(real.modelJsonPath, real.runId)]);
  }, 150_000);

  it('does not restart a run whose diff step is still working, however long it takes', async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    await stack.app.hosts[0].stop();
    const runId = await requestRun(stack);
    expect((await startRun(deps, runId)).kind).toBe('done');
    // A worker holds shard 0 and renews its claim; the run record itself has not changed for 10 minutes.
    const claim = await deps.units.claim(runId, 'shard', 0, 'a0a0a0a0a0a0', 15 * 60_000);
    expect(claim.kind).toBe('claimed');
    expect((await sweepRuns(later(deps, 10))).restarted).toEqual([]);
    // Once that claim has run out too, the run is taken for one a crash left behind.
    expect((await sweepRuns(later(deps, 20))).restarted).toEqual([runId]);
  }, 60_000);
});
