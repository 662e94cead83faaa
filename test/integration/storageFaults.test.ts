import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { TableClient } from '@azure/data-tables';
import { systemClock } from '../../shared/clock';
import { rowsAccountedFor } from '../../shared/runs/runRecord';
import { RunStore } from '../../shared/runs/runStore';
import { requestSync } from '../../shared/sync/startSync';
import { isConflict } from '../../shared/storage/storageErrors';
import { startTestStack, type TestStack } from '../helpers/testStack';
import { expectedBraze, makeProfiles, writeRefresh } from '../helpers/profileModel';
import { faultyStorage } from '../helpers/storageFaults';

describe('storage that misbehaves like Azure Storage under load', () => {
  let azurite: AzuriteInstance | undefined;
  let stack: TestStack | undefined;
  let proxy: Awaited<ReturnType<typeof faultyStorage>> | undefined;
  afterEach(async () => {
    await stack?.stop();
    await proxy?.stop();
    await azurite?.stop();
  });

  it('ends with Braze equal to the export and exact counts through 503 ServerBusy, 500s and dropped connections', async () => {
    azurite = await startAzurite();
    const calm = { serverBusy: 0, internalError: 0, resetBefore: 0, resetAfter: 0 };
    proxy = await faultyStorage(azurite.connectionString, calm, Number(process.env.FAULT_SEED ?? 11));
    stack = await startTestStack({
      azurite: { ...azurite, connectionString: proxy.connectionString, stop: async () => undefined },
      env: { STORAGE_RETRY_DELAY_MS: '20', STORAGE_MAX_RETRY_DELAY_MS: '200', STORAGE_TRY_TIMEOUT_MS: '5000', ENQUEUE_LEASE_MS: '5000' },
      lockSeconds: 10,
    });
    const profiles = makeProfiles(1, 6000);
    await writeRefresh(stack.app.deps.storage.exportContainer, profiles.values(), '2026/11/28/0600', 2);
    const { runs, problems } = await requestSync(stack.app.deps, { trigger: 'http' });
    expect(problems).toEqual([]);
    // From here on every storage call of the functions goes through the faults; the test watches on a direct line.
    proxy.setFaults({ serverBusy: 0.05, internalError: 0.03, resetBefore: 0.03, resetAfter: 0.03 });
    const observer = new RunStore(
      TableClient.fromConnectionString(azurite.connectionString, stack.env.RUNS_TABLE ?? 'brazeconnectorruns', { allowInsecureConnection: true }),
      systemClock,
    );
    const runId = runs[0].runId;
    const deadline = Date.now() + 100_000;
    let run = (await observer.get(runId))!;
    while (run.status !== 'completed' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      run = (await observer.get(runId))!;
    }
    proxy.setFaults(calm);
    if (run.status !== 'completed') console.log(stack.log.lines.slice(-40).join('\n'));

    expect(run.status).toBe('completed');
    expect(run.usersDelivered).toBe(6000);
    expect(run.usersFailed).toBe(0);
    expect(rowsAccountedFor(run)).toBe(run.rowsRead);
    expect(run.usersDelivered + run.usersRejected + run.usersFailed).toBe(run.usersEnqueued);
    const expected = expectedBraze([profiles]);
    expect(stack.braze.profiles.size).toBe(expected.size);
    for (const [key, profile] of expected) expect(stack.braze.profile(key)).toEqual(profile);
    // The faults did happen: every kind, on every service.
    const kinds = ['serverBusy', 'internalError', 'resetBefore', 'resetAfter'] as const;
    const missing = Object.entries(proxy.proxies).flatMap(([service, p]) =>
      kinds.filter((k) => p.counts[k] === 0).map((k) => `${service}: no ${k} in ${p.counts.requests} calls`),
    );
    expect(missing).toEqual([]);
  }, 120_000);
});

describe('a lost race is recognised by its status code', () => {
  it('is a conflict for 409 and 412, whatever the message says, and nothing else is', () => {
    expect(isConflict({ statusCode: 409, message: 'EntityAlreadyExists' })).toBe(true);
    expect(isConflict({ statusCode: 412, message: 'UpdateConditionNotSatisfied' })).toBe(true);
    expect(isConflict({ statusCode: 500, message: 'upstream said 409 once' })).toBe(false);
    expect(isConflict(new Error('409 Conflict'))).toBe(false);
  });
});
