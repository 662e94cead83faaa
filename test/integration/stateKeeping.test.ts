import { BrazeAuthError } from '../../shared/errors';
import { startRun } from '../../shared/sync/startRun';
import { haltRun } from '../../shared/sync/runEvents';
import { requestSync } from '../../shared/sync/startSync';
import { sweepRuns } from '../../shared/sync/sweepRuns';
import type { ConnectorDeps } from '../../shared/runs/connectorDeps';
import { previewReportName } from '../../shared/runs/runBlobs';
import { readPreviousState, stateFolder, stateLine, type StateRecord } from '../../shared/state/deliveredState';
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

  it("writes an unchanged profile's line again as it was, and a line of another layout as it writes lines", async () => {
    stack = await stacks.start();
    const deps = stack.app.deps;
    const container = deps.storage.stateContainer;
    await writeRefresh(deps.storage.exportContainer, refresh1.values(), '2026/11/28/0600');
    const [first] = await stack.app.waitForRuns([await requestRun(stack)], { timeoutMs: 60_000 });
    expect(first.status).toBe('completed');

    /** The lines of the destination's state, by key hash. */
    const stateLines = async (): Promise<Map<string, string>> => {
      const previous = await readPreviousState(container, await deps.destinations.statePointer(first.modelJsonPath));
      if (previous.format !== 2) throw new Error('no sharded state');
      const lines = new Map<string, string>();
      for (const blobName of previous.manifest.blobs)
        for (const line of (await container.getBlobClient(blobName).downloadToBuffer()).toString('utf8').split(/\r?\n/))
          if (line) lines.set((JSON.parse(line) as StateRecord).h, line);
      return lines;
    };
    // Every third line of the state as another writer might lay it out: keys in another order, CRLF.
    const previous = await readPreviousState(container, await deps.destinations.statePointer(first.modelJsonPath));
    if (previous.format !== 2) throw new Error('no sharded state');
    const relaid = new Set<string>();
    for (const blobName of previous.manifest.blobs) {
      const lines = (await container.getBlobClient(blobName).downloadToBuffer()).toString('utf8').split('\n').filter(Boolean);
      const text = lines
        .map((line, i) => {
          if (i % 3) return line;
          const { h, k, m, f, a, c } = JSON.parse(line) as StateRecord;
          relaid.add(h);
          return JSON.stringify({ f, m, k, h, ...(a === undefined ? {} : { a }), ...(c === undefined ? {} : { c }) });
        })
        .join('\r\n');
      await container.getBlockBlobClient(blobName).upload(text, Buffer.byteLength(text));
    }
    expect(relaid.size).toBeGreaterThan(50);
    const before = await stateLines();

    // Refresh 2: profiles 1–30 leave, 31–300 stay (their points unchanged), 301–330 join.
    const unchanged = new Map([...makeProfiles(31, 300)]);
    await writeRefresh(deps.storage.exportContainer, [...unchanged.values(), ...makeProfiles(301, 330).values()], '2026/11/29/0600');
    const [second] = await stack.app.waitForRuns([await requestRun(stack)], { timeoutMs: 60_000 });
    expect(second.status).toBe('completed');
    expect(second.usersEnqueued).toBe(30 + 30);
    expect(second.exitsEnqueued).toBe(30);

    const after = await stateLines();
    expect(after.size).toBe(300);
    let asRead = 0;
    for (const [hash, line] of after) {
      // Every line as the connector writes lines, whatever layout it was read in.
      expect(line).toBe(stateLine(JSON.parse(line) as StateRecord));
      const was = before.get(hash);
      if (!was) continue;
      // The profiles that stayed: the same record, and the very line when it was read in that layout.
      expect(JSON.parse(line)).toEqual(JSON.parse(was));
      if (!relaid.has(hash)) {
        expect(line).toBe(was);
        asRead += 1;
      }
    }
    expect(asRead).toBeGreaterThan(100);
  }, 120_000);
});
