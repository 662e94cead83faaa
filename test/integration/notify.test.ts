import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseSyncConfig } from '../../shared/config/syncConfig';
import { requestSync } from '../../shared/sync/startSync';
import { QueueServiceClient } from '@azure/storage-queue';
import { BrazeAuthError, InvalidInputError } from '../../shared/errors';
import { failRun } from '../../shared/sync/failRun';
import { owedNotices } from '../../shared/sync/notify';
import { sweepRuns } from '../../shared/sync/sweepRuns';
import { resumeRun } from '../../shared/sync/resumeRun';
import { haltRun } from '../../shared/sync/runEvents';
import { createConnector } from '../../shared/sync/connector';
import { makeProfiles, writeRefresh } from '../helpers/profileModel';
import { waitFor } from '../helpers/expectations';
import { stacksOnSharedAzurite, testConfig, type TestStack } from '../helpers/testStack';

/** A webhook receiver of ours: records each POST; answers each path with the statuses it is given for it, then 200. */
class Receiver {
  readonly posts: { path: string; body: unknown }[] = [];
  answers: Record<string, number[]> = {};
  private readonly server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      this.posts.push({ path: request.url ?? '', body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      response.writeHead(this.answers[request.url ?? '']?.shift() ?? 200, { 'Content-Type': 'text/plain' });
      response.end('ok');
    });
  });
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
  on(path: string) {
    return this.posts.filter((p) => p.path === path).map((p) => p.body as Record<string, unknown>);
  }
}

describe('notifications of how runs end', () => {
  const stacks = stacksOnSharedAzurite();
  const receiver = new Receiver();
  let base = '';
  beforeAll(async () => {
    base = await receiver.start();
  });
  afterAll(() => receiver.stop());
  beforeEach(() => {
    receiver.posts.length = 0;
    receiver.answers = {};
  });

  const start = (notify: ReturnType<typeof testConfig>['destinations'][number]['notify'], env: Record<string, string> = {}) =>
    stacks.start({
      config: testConfig({ notify }),
      env: {
        // The URLs carry a secret part, as Slack's and Teams' do.
        HOOK_JSON: `${base}/json/s3cr3t-json`,
        HOOK_SLACK: `${base}/slack/s3cr3t-slack`,
        HOOK_TEAMS: `${base}/teams/s3cr3t-teams`,
        NOTIFY_RETRY_SECONDS: '0.2,0.2,0.2',
        ...env,
      },
    });
  /** A run read and queued whose batches wait unsent (the sender host is stopped). */
  const sendingRun = async (stack: TestStack) => {
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, makeProfiles(1, 10).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const outcome = await requestSync(deps, { trigger: 'http' });
    const runId = outcome.runs[0].runId;
    await waitFor(async () => (await deps.runs.get(runId))!.enqueueDone, 30_000);
    return runId;
  };
  const sync = async (stack: TestStack, folder: string) => {
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    expect(outcome.problems).toEqual([]);
    const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
    return { run, folder };
  };

  it('posts the run summary to each webhook that asked for its event, in its format, without PII or the URL in any log', async () => {
    const stack = await start([
      { urlSetting: 'HOOK_JSON', on: ['completed', 'failed'], format: 'json' },
      { urlSetting: 'HOOK_SLACK', on: ['completed'], format: 'slack' },
      { urlSetting: 'HOOK_TEAMS', on: ['completed'], format: 'teams' },
      { urlSetting: 'HOOK_JSON', on: ['held'], format: 'json' },
    ]);
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 50).values(), '2026/11/28/0600', 1);
    const { run } = await sync(stack, '2026/11/28/0600');
    expect(run.status).toBe('completed');
    await waitFor(() => receiver.posts.length >= 3, 15_000);
    const [json] = receiver.on('/json/s3cr3t-json');
    expect(json).toMatchObject({
      event: 'completed',
      connectorEvent: 'RunCompleted',
      runId: run.runId,
      destination: 'BrazeExport',
      status: 'completed',
      refresh: run.refreshLabel,
      profilesDelivered: 50,
      statusPath: `/api/runs/${run.runId}`,
    });
    const [slack] = receiver.on('/slack/s3cr3t-slack');
    expect(slack).toEqual({ text: expect.stringMatching(new RegExp(`^\\*Sync completed: BrazeExport \\(run ${run.runId}\\)\\*\\n• `)) });
    expect(slack.text).toContain('• profilesDelivered: 50');
    const [teams] = receiver.on('/teams/s3cr3t-teams') as {
      attachments: { contentType: string; content: { type: string; body: { type: string; text?: string; facts?: { title: string; value: string }[] }[] } }[];
    }[];
    expect(teams.attachments[0].contentType).toBe('application/vnd.microsoft.card.adaptive');
    expect(teams.attachments[0].content.type).toBe('AdaptiveCard');
    expect(teams.attachments[0].content.body[1].facts).toContainEqual({ title: 'profilesDelivered', value: '50' });
    // Only what was asked for: nobody asked for "held", and it did not happen.
    expect(receiver.posts).toHaveLength(3);
    const everything = JSON.stringify(receiver.posts) + stack.log.lines.join('\n');
    expect(everything).not.toMatch(/@example\.com|First\d/);
    expect(stack.log.lines.join('\n')).not.toContain('s3cr3t');
  }, 90_000);

  it('tries a webhook that fails again later, gives up on one that refuses, and never fails a run for it', async () => {
    const stack = await start(
      [
        { urlSetting: 'HOOK_JSON', on: ['halted'], format: 'json' },
        { urlSetting: 'HOOK_SLACK', on: ['halted'], format: 'slack' },
        // Nothing listens there: no answer, tried again, then given up.
        { urlSetting: 'HOOK_DOWN', on: ['halted'], format: 'json' },
        { urlSetting: 'HOOK_UNSET', on: ['halted'], format: 'json' },
      ],
      { HOOK_DOWN: 'http://127.0.0.1:9/s3cr3t-down' },
    );
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 10).values(), '2026/11/28/0600', 1);
    await stack.app.hosts[1].stop();
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    const runId = outcome.runs[0].runId;
    await waitFor(async () => (await stack.app.deps.runs.get(runId))!.enqueueDone, 30_000);
    // The JSON hook is down twice (503, then 429) and then takes it; the Slack hook refuses (404): given up at once.
    receiver.answers = { '/json/s3cr3t-json': [503, 429], '/slack/s3cr3t-slack': [404] };
    await haltRun(stack.app.deps, runId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    await waitFor(() => receiver.on('/json/s3cr3t-json').length === 3, 20_000);
    expect(receiver.on('/slack/s3cr3t-slack')).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(receiver.posts).toHaveLength(4);
    expect(receiver.on('/json/s3cr3t-json')[2]).toMatchObject({ event: 'halted', runId, brazeStatus: 401, status: 'halted' });
    let log = stack.log.lines.join('\n');
    expect(log).toMatch(/the halted notification \(json, HOOK_JSON\) failed \(the webhook answered 503\); tried again/);
    expect(log).toMatch(/the halted notification \(slack, HOOK_SLACK\) was given up after 1 tries: the webhook answered 404/);
    await waitFor(() => /\(json, HOOK_DOWN\) was given up after 4 tries: no answer \(ECONNREFUSED\)/.test(stack.log.lines.join('\n')), 20_000);
    expect(stack.log.lines.join('\n')).toMatch(
      /\(json, HOOK_UNSET\) was given up after 1 tries: its URL could not be read: its app setting HOOK_UNSET is not set/,
    );
    log = stack.log.lines.join('\n');
    expect(log).not.toContain('s3cr3t');
    expect((await stack.app.deps.runs.get(runId))!.status).toBe('halted');
  }, 90_000);

  it.each(['halted', 'failed', 'stalled'] as const)(
    'a %s notification the queue refused is kept owed on the run and queued by the sweep, once, with the status it was owed for',
    async (event) => {
      const stack = await start([{ urlSetting: 'HOOK_JSON', on: [event], format: 'json' }]);
      const deps = stack.app.deps;
      const runId = await sendingRun(stack);
      // The sweep that stalls a run sees it from two hours on; the others change it now.
      const startMinutes = event === 'stalled' ? 120 : 0;
      const at = (minutes: number) => ({ ...deps, clock: { ...deps.clock, now: () => Date.now() + (startMinutes + minutes) * 60_000 } });
      // The worker writes the status, then cannot queue the notification (a real client, a queue
      // that does not exist): the same place as a worker that dies between the two.
      const runQueue = deps.storage.runQueue;
      deps.storage.runQueue = QueueServiceClient.fromConnectionString(stack.azurite.connectionString).getQueueClient('no-such-queue');
      try {
        if (event === 'halted') await haltRun(deps, runId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
        else if (event === 'failed') await failRun(deps, (await deps.runs.get(runId))!, new InvalidInputError('the export is not what it says'));
        else expect((await sweepRuns(at(0))).stalled.map((s) => s.runId)).toEqual([runId]);
      } finally {
        deps.storage.runQueue = runQueue;
      }
      const owed = await deps.runs.get(runId);
      expect(owed!.status).toBe(event);
      expect(owedNotices(owed!)).toEqual([expect.objectContaining({ event, targets: [0], recorded: true })]);
      expect(stack.log.lines.join('\n')).toMatch(new RegExp(`the ${event} notification could not be queued`));
      // A fresh notice is its worker's to send; a minute on, the sweep's — whatever the run did since.
      expect((await sweepRuns(at(0))).notified).toEqual([]);
      if (event !== 'failed') expect((await resumeRun(deps, runId)).kind).toBe('resumed');
      expect((await sweepRuns(at(2))).notified).toEqual([runId]);
      await waitFor(() => receiver.on('/json/s3cr3t-json').length === 1, 20_000);
      expect(receiver.on('/json/s3cr3t-json')[0]).toMatchObject({ event, runId, status: event, destination: 'BrazeExport' });
      expect((await deps.runs.get(runId))!.owedNotices).toBeUndefined();
      // Sent, it is owed no more; the run record was written once, by the worker (the alerts read it).
      expect((await sweepRuns(at(2))).notified).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(receiver.posts).toHaveLength(1);
      const connectorEvent = { halted: 'RunHalted', failed: 'RunFailed', stalled: 'RunStalled' }[event];
      expect(stack.log.records.filter((r) => r.connectorEvent === connectorEvent && 'runId' in r && r.runId === runId)).toHaveLength(1);
    },
    90_000,
  );

  it('writes the run record and tells the webhook from the sweep when the worker died right after the status write', async () => {
    const stack = await start([{ urlSetting: 'HOOK_JSON', on: ['failed'], format: 'json' }]);
    const deps = stack.app.deps;
    const runId = await sendingRun(stack);
    // The worker dies where it would write the run's RunFailed record: nothing after the status write happens.
    const record = deps.log.record.bind(deps.log);
    deps.log.record = (r) => {
      if (r.connectorEvent === 'RunFailed') throw new Error('the worker died here');
      record(r);
    };
    try {
      await expect(failRun(deps, (await deps.runs.get(runId))!, new InvalidInputError('the export is not what it says'))).rejects.toThrow(
        'the worker died here',
      );
    } finally {
      deps.log.record = record;
    }
    expect((await deps.runs.get(runId))!.status).toBe('failed');
    const failedRecords = () => stack.log.records.filter((r) => r.connectorEvent === 'RunFailed' && r.runId === runId);
    expect(failedRecords()).toEqual([]);
    const later = { ...deps, clock: { ...deps.clock, now: () => Date.now() + 2 * 60_000 } };
    expect((await sweepRuns(later)).notified).toEqual([runId]);
    expect(failedRecords()).toEqual([{ connectorEvent: 'RunFailed', runId, destination: 'BrazeExport', reason: 'the export is not what it says' }]);
    await waitFor(() => receiver.on('/json/s3cr3t-json').length === 1, 20_000);
    expect(receiver.on('/json/s3cr3t-json')[0]).toMatchObject({ event: 'failed', runId, status: 'failed', reason: 'the export is not what it says' });
    expect((await deps.runs.get(runId))!.owedNotices).toBeUndefined();
  }, 90_000);

  it('tells "completed" once when the finalizer died right after completing the run: its retry sends what the completion owes', async () => {
    const stack = await start([{ urlSetting: 'HOOK_JSON', on: ['completed'], format: 'json' }]);
    const deps = stack.app.deps;
    await writeRefresh(deps.storage.exportContainer, makeProfiles(1, 20).values(), '2026/11/28/0600', 1);
    // The finalizer dies where it would write the RunCompleted record (once): its message is retried.
    const record = deps.log.record.bind(deps.log);
    let died = false;
    deps.log.record = (r) => {
      if (r.connectorEvent === 'RunCompleted' && !died) {
        died = true;
        throw new Error('the finalizer died here');
      }
      record(r);
    };
    try {
      const { run } = await sync(stack, '2026/11/28/0600');
      expect(run.status).toBe('completed');
      await waitFor(async () => (await deps.destinations.activeRun(run.modelJsonPath)) === undefined, 30_000);
      expect(died).toBe(true);
      await waitFor(() => receiver.on('/json/s3cr3t-json').length === 1, 20_000);
      expect(receiver.on('/json/s3cr3t-json')[0]).toMatchObject({ event: 'completed', runId: run.runId, status: 'completed', profilesDelivered: 20 });
      expect(stack.log.records.filter((r) => r.connectorEvent === 'RunCompleted' && r.runId === run.runId)).toHaveLength(1);
      expect((await deps.runs.get(run.runId))!.owedNotices).toBeUndefined();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(receiver.posts).toHaveLength(1);
    } finally {
      deps.log.record = record;
    }
  }, 90_000);

  it('takes what a status change owes off the run once it is written and queued, webhooks or none', async () => {
    const stack = await start([{ urlSetting: 'HOOK_JSON', on: ['halted'], format: 'json' }]);
    const deps = stack.app.deps;
    const runId = await sendingRun(stack);
    await failRun(deps, (await deps.runs.get(runId))!, new InvalidInputError('the export is not what it says'));
    // Nobody asked for "failed": its record written, nothing owed, nothing sent.
    expect((await deps.runs.get(runId))!.owedNotices).toBeUndefined();
    const other = await requestSync(deps, { trigger: 'http', force: true });
    const otherId = other.runs[0].runId;
    await waitFor(async () => (await deps.runs.get(otherId))?.enqueueDone === true, 30_000);
    await haltRun(deps, otherId, new BrazeAuthError('Braze answered 401: Invalid API key: [redacted]', 401));
    expect((await deps.runs.get(otherId))!.owedNotices).toBeUndefined();
    await waitFor(() => receiver.on('/json/s3cr3t-json').length === 1, 20_000);
  }, 90_000);

  it('refuses a notify target without exactly one place for its URL, and an app setting that is not set', () => {
    const parse = (notify: unknown[]) =>
      parseSyncConfig(
        JSON.stringify({ destinations: [{ name: 'D', segments: [{ table: 'T', brazeSegmentId: 's' }], matching: { customerIdColumn: 'Id' }, notify }] }),
        'test',
      );
    expect(() => parse([{ on: ['failed'] }])).toThrow(/notify\.0.*exactly one of urlSetting and urlSecretUri/s);
    expect(() => parse([{ urlSetting: 'A', on: ['exploded'] }])).toThrow(/notify\.0\.on\.0/);
    expect(() => parse([{ urlSetting: 'A', format: 'discord' }])).toThrow(/format/);
    expect(parse([{ urlSetting: 'A' }]).destinations[0].notify).toEqual([{ urlSetting: 'A', on: ['failed', 'held', 'halted', 'stalled'], format: 'json' }]);
    // An app setting a target names that is not set stops nothing: the app says so, and each notification why it was not sent.
    const log: string[] = [];
    const config = testConfig({ notify: [{ urlSetting: 'HOOK_MISSING', on: ['failed'], format: 'json' }] });
    createConnector({
      env: {
        AzureWebJobsStorage: 'UseDevelopmentStorage=true',
        BRAZE_API_KEY: 'k',
        SYNC_CONFIG: '{}',
        EXPORT_CONTAINER: 'exports',
        BRAZE_REST_ENDPOINT: 'rest.iad-03.braze.com',
      },
      config,
      log: { info: () => undefined, warn: (m) => log.push(m), error: (m) => log.push(m), record: () => undefined },
    });
    expect(log).toEqual([expect.stringMatching(/destination BrazeExport notifies a webhook whose URL is in app setting HOOK_MISSING, which is not set/)]);
  });
});
