import { HttpRequest, InvocationContext } from '@azure/functions';
import { syncHttp, syncHttpOptions } from '../../functions/syncHttp';
import { runStatus, runStatusOptions } from '../../functions/runStatus';
import { runResumeOptions } from '../../functions/runResume';
import { exportBlobDrop } from '../../functions/exportBlobDrop';
import { blobCreatedEvent } from '../../local/blobEvents';
import { syncTimer } from '../../functions/syncTimer';
import { rejectsReportName } from '../../shared/runs/runBlobs';
import { rowsAccountedFor, type RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { csv, writeExport } from '../helpers/exportBuilder';
import { startIsolatedStack, startTestStack, TEST_API_KEY, testConfig, type TestStack } from '../helpers/testStack';
import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { LocalHttpHost } from '../../local/httpHost';

const context = (triggerMetadata?: Record<string, unknown>) =>
  new InvocationContext({ functionName: 'test', invocationId: 'test', triggerMetadata, logHandler: () => undefined });
const timerTick = { isPastDue: false, schedule: { adjustForDST: false }, scheduleStatus: { last: '', next: '', lastUpdated: '' } };

const ID = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

/** Two segments, headerless, several partitions, and the rows every export eventually contains. */
async function writeStandardExport(stack: TestStack, destination = 'BrazeExport') {
  return writeExport(stack.app.deps.storage.exportContainer, {
    destination,
    segments: [
      {
        table: 'HighValue',
        partitions: [
          csv(
            [
              [ID(1), 'Ana@Example.com ', 'Ana', '10'],
              [ID(2), 'ben@example.com', 'Ben "B" Jr., III', '20'],
              [ID(3), 'not-an-email', 'Multi\nLine', '30'],
            ],
            { crlf: true, bom: true },
          ),
          csv([
            ['', 'dana@example.com', 'Dana', ''],
            ['', '', 'Nobody', '5'],
            ['reject-me', 'rita@example.com', 'Rita', '1'],
          ]) +
            '"' +
            ID(9) +
            '","short@example.com","Short"\n',
        ],
      },
      {
        table: 'Newsletter',
        partitions: [
          csv([
            [ID(1), 'ana@example.com', 'Ana', '10'],
            [ID(4), 'cara@example.com', 'Cara', 'many'],
          ]),
        ],
      },
    ],
  });
}

async function runToEnd(stack: TestStack, runIds: string[]): Promise<RunRecord[]> {
  return stack.app.waitForRuns(runIds, { timeoutMs: 60_000 });
}

async function readBlob(stack: TestStack, name: string): Promise<string> {
  return (await stack.app.deps.storage.stateContainer.getBlobClient(name).downloadToBuffer()).toString('utf8');
}

let currentStack: TestStack | undefined;
/** The BlobCreated event Event Grid would deliver for a blob of the export container. */
function blobEvent(name: string) {
  return blobCreatedEvent(currentStack!.app.deps.storage.exportContainer, name);
}

describe('a Customer Insights export synced end to end (Azurite + local Braze)', () => {
  let azurite: AzuriteInstance;
  let stack: TestStack;

  beforeAll(async () => {
    azurite = await startAzurite();
  });
  afterAll(async () => {
    await azurite.stop();
  });
  afterEach(async () => {
    await stack?.stop();
  });

  async function freshStack(options: Parameters<typeof startTestStack>[0] = {}) {
    stack = await startIsolatedStack(azurite, options);
    currentStack = stack;
    return stack;
  }

  it('delivers every valid row with its identifier, segment attributes and mapped fields, and reports the rest', async () => {
    await freshStack();
    await writeStandardExport(stack);
    await syncTimer(timerTick, context());
    const runs = await stack.app.deps.runs.listRuns();
    expect(runs).toHaveLength(1);
    const [run] = await runToEnd(stack, [runs[0].runId]);

    expect(run.status).toBe('completed');
    expect(run.rowsRead).toBe(9);
    expect(rowsAccountedFor(run)).toBe(run.rowsRead);
    expect(run.rowsRejectedInput).toBe(2); // no identifier, wrong column count
    expect(run.rowsRejectedBraze).toBe(1); // Braze refuses reject-me
    expect(run.rowsDelivered).toBe(6); // Ana twice (one profile), Ben, row 3, Dana, Cara

    const braze = stack.braze;
    expect(braze.profile(`external_id:${ID(1)}`)).toEqual({
      email: 'ana@example.com',
      first_name: 'Ana',
      loyalty_points: 10,
      ci_high_value: true,
      ci_newsletter: true,
    });
    expect(braze.profile(`external_id:${ID(2)}`)).toEqual({
      email: 'ben@example.com',
      first_name: 'Ben "B" Jr., III',
      loyalty_points: 20,
      ci_high_value: true,
    });
    // An invalid e-mail on a row with an external_id is dropped from the row and reported; the row still lands.
    expect(braze.profile(`external_id:${ID(3)}`)).toEqual({ first_name: 'Multi\nLine', loyalty_points: 30, ci_high_value: true });
    // No customer ID: keyed by e-mail, created with _update_existing_only false; an empty number is null (absent).
    expect(braze.profile('email:dana@example.com')).toEqual({ email: 'dana@example.com', first_name: 'Dana', ci_high_value: true });
    // A value of the wrong type is not sent, the rest of the row is.
    expect(braze.profile(`external_id:${ID(4)}`)).toEqual({ email: 'cara@example.com', first_name: 'Cara', ci_newsletter: true });
    expect(braze.profile('external_id:reject-me')).toBeUndefined();
    expect(braze.profiles.size).toBe(5);

    const report = await readBlob(stack, rejectsReportName(run.runId));
    const lines = report.trim().split('\n');
    expect(lines[0]).toBe('outcome,source,row,identifier,reason');
    expect(report).toMatch(/rejected,CustomerInsights_0a1b2c3d\/BrazeExport\/HighValue\/2026\/11\/28\/0600\/HighValue_2\.csv,2,,"?no usable identifier/);
    expect(report).toMatch(/rejected,[^,]*HighValue_2\.csv,4,,"?expected 4 columns, found 3/);
    expect(report).toMatch(/field_dropped,[^,]*HighValue_1\.csv,3,external_id 00000000-0000-4000-8000-000000000003,"?email: invalid e-mail address, not sent/);
    expect(report).toMatch(/field_dropped,[^,]*Newsletter_1\.csv,2,external_id [^,]+,"?loyalty_points: not an integer/);
    expect(report).toMatch(/rejected,[^,]*HighValue_2\.csv,3,external_id reject-me,Braze: Invalid external_id \(line 3\)/);
    expect(report).not.toMatch(/@/);
  });

  it('starts one run when the timer, an HTTP call and blob events hit the same refresh at once', async () => {
    await freshStack();
    const { partitionNames, modelJsonPath } = await writeStandardExport(stack);
    const http = syncHttp(new HttpRequest({ method: 'POST', url: 'http://localhost/api/sync', body: { string: '{}' } }), context());
    await Promise.all([
      syncTimer(timerTick, context()),
      http,
      syncTimer(timerTick, context()),
      ...[...partitionNames, modelJsonPath].map(async (name) => exportBlobDrop(await blobEvent(name), context())),
    ]);
    const runs = await stack.app.deps.runs.listRuns();
    expect(runs).toHaveLength(1);
    const response = await http;
    expect(response.status).toBe(202);
    expect((response.jsonBody as { runId: string }).runId).toBe(runs[0].runId);
    const [run] = await runToEnd(stack, [runs[0].runId]);
    expect(run.status).toBe('completed');
    expect(run.usersDelivered + run.usersRejected).toBe(run.usersEnqueued);
    // Each profile was applied once: no batch ran twice.
    expect(stack.braze.stats.objectsApplied).toBe(run.usersDelivered);

    const again = await requestSync(stack.app.deps, { trigger: 'timer' });
    expect(again.runs).toEqual([expect.objectContaining({ runId: run.runId, created: false })]);
  });

  it('answers run status over HTTP and validates the sync request body', async () => {
    await freshStack();
    await writeStandardExport(stack);
    const bad = await syncHttp(new HttpRequest({ method: 'POST', url: 'http://localhost/api/sync', body: { string: '{"force":"yes","extra":1}' } }), context());
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.jsonBody)).toMatch(/force/);
    expect(JSON.stringify(bad.jsonBody)).toMatch(/extra/);
    const unknown = await syncHttp(
      new HttpRequest({ method: 'POST', url: 'http://localhost/api/sync', body: { string: '{"destination":"Nope"}' } }),
      context(),
    );
    expect(unknown.status).toBe(400);
    expect(JSON.stringify(unknown.jsonBody)).toMatch(/Nope.{0,4} is not configured/);

    const started = await syncHttp(
      new HttpRequest({ method: 'POST', url: 'http://localhost/api/sync', body: { string: '{"segments":["HighValue"]}' } }),
      context(),
    );
    expect(started.status).toBe(202);
    const runId = (started.jsonBody as { runId: string }).runId;
    await runToEnd(stack, [runId]);
    const status = await runStatus(new HttpRequest({ method: 'GET', url: `http://localhost/api/runs/${runId}`, params: { id: runId } }), context());
    expect(status.status).toBe(200);
    expect(status.jsonBody).toMatchObject({ runId, status: 'completed', rows: { read: 7, rejected: 3, failed: 0 } });
    // Only the requested segment was synced.
    expect(stack.braze.profile(`external_id:${ID(4)}`)).toBeUndefined();
    const missing = await runStatus(
      new HttpRequest({ method: 'GET', url: 'http://localhost/api/runs/r-000000000000000000000000', params: { id: 'r-000000000000000000000000' } }),
      context(),
    );
    expect(missing.status).toBe(404);
    const malformed = await runStatus(new HttpRequest({ method: 'GET', url: 'http://localhost/api/runs/x', params: { id: "r-1' or true" } }), context());
    expect(malformed.status).toBe(400);
  });

  it('rejects a second row of the same profile within one segment, naming the reason, and sends the first', async () => {
    await freshStack();
    await writeExport(stack.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      segments: [
        {
          table: 'HighValue',
          partitions: [
            csv([
              [ID(1), 'a@example.com', 'First', '1'],
              [ID(1), 'a@example.com', 'Second', '2'],
            ]),
          ],
        },
        { table: 'Newsletter', partitions: [csv([[ID(1), 'a@example.com', 'First', '1']])] },
      ],
    });
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    const [run] = await runToEnd(stack, [outcome.runs[0].runId]);
    expect(run.rowsRead).toBe(3);
    expect(run.rowsDelivered).toBe(2);
    expect(run.rowsRejectedInput).toBe(1);
    expect(rowsAccountedFor(run)).toBe(3);
    expect(stack.braze.profile(`external_id:${ID(1)}`)).toMatchObject({ first_name: 'First', ci_high_value: true, ci_newsletter: true });
    const report = await readBlob(stack, rejectsReportName(run.runId));
    expect(report).toMatch(/rejected,[^,]*HighValue_1\.csv,2,external_id [^,]+,"?duplicate: the segment has another row of this profile/);
  });

  it('requires a function key on every HTTP function', async () => {
    for (const options of [syncHttpOptions, runStatusOptions, runResumeOptions]) expect(options.authLevel).toBe('function');
    // And over HTTP, as the local host routes and checks them like the Functions host.
    await freshStack();
    await writeStandardExport(stack);
    const host = new LocalHttpHost('the-key');
    const url = await host.start();
    try {
      expect((await fetch(`${url}/api/sync`, { method: 'POST', body: '{}' })).status).toBe(401);
      expect((await fetch(`${url}/api/sync?code=wrong`, { method: 'POST', body: '{}' })).status).toBe(401);
      const started = await fetch(`${url}/api/sync`, { method: 'POST', body: '{}', headers: { 'x-functions-key': 'the-key' } });
      expect(started.status).toBe(202);
      const { runId } = (await started.json()) as { runId: string };
      await runToEnd(stack, [runId]);
      const status = await fetch(`${url}/api/runs/${runId}?code=the-key`);
      expect(status.status).toBe(200);
      expect(await status.json()).toMatchObject({ runId, status: 'completed' });
      expect((await fetch(`${url}/api/runs/${runId}`)).status).toBe(401);
    } finally {
      await host.stop();
    }
  });

  it('starts the sync from the blob event of model.json, and waits while the export is incomplete', async () => {
    await freshStack();
    const container = stack.app.deps.storage.exportContainer;
    const { modelJsonPath, partitionNames } = await writeStandardExport(stack);
    // A partition listed in model.json is missing (CI still writing): no run yet, and no error.
    const partition = await container.getBlobClient(partitionNames[1]).downloadToBuffer();
    await container.getBlobClient(partitionNames[1]).delete();
    await exportBlobDrop(await blobEvent(modelJsonPath), context());
    expect(await stack.app.deps.runs.listRuns()).toHaveLength(0);
    // The partition lands; its blob event starts the run.
    await container.getBlockBlobClient(partitionNames[1]).upload(partition, partition.length);
    await exportBlobDrop(await blobEvent(partitionNames[1]), context());
    const runs = await stack.app.deps.runs.listRuns();
    expect(runs).toHaveLength(1);
    expect(runs[0].trigger).toBe('blob');
    const [run] = await runToEnd(stack, [runs[0].runId]);
    expect(run.status).toBe('completed');
    // Blobs outside any configured destination are ignored.
    await container.getBlockBlobClient('CustomerInsights_x/Other/model.json').upload('{}', 2);
    await exportBlobDrop(await blobEvent('CustomerInsights_x/Other/model.json'), context());
    expect(await stack.app.deps.runs.listRuns()).toHaveLength(1);
  });

  it('takes only BlobCreated events of the export container on the export account, and never reads the blob from the event', async () => {
    await freshStack();
    const { modelJsonPath } = await writeStandardExport(stack);
    const real = await blobEvent(modelJsonPath);
    const lines: string[] = [];
    const ctx = new InvocationContext({ functionName: 'exportBlobDrop', invocationId: 'e', logHandler: (_level, ...args) => lines.push(args.join(' ')) });
    const url = real.data!.url as string;
    const ignored = [
      { ...real, eventType: 'Microsoft.Storage.BlobDeleted' },
      { ...real, subject: real.subject.replace(stack.app.deps.storage.exportContainer.containerName, 'another-container') },
      { ...real, data: { ...real.data, url: url.replace('127.0.0.1', 'elsewhere.blob.core.windows.net') } },
      { ...real, data: { ...real.data, api: 'CreateFile' } },
      { ...real, subject: '/blobServices/default/containers' },
    ];
    for (const event of ignored) await exportBlobDrop(event, ctx);
    expect(await stack.app.deps.runs.listRuns()).toHaveLength(0);
    expect(lines.filter((l) => / ignored: /.test(l))).toHaveLength(ignored.length);
    // A CloudEvent says the same in other words.
    const { eventType: _type, ...rest } = real;
    await exportBlobDrop({ ...rest, type: 'Microsoft.Storage.BlobCreated' } as unknown as typeof real, ctx);
    expect(await stack.app.deps.runs.listRuns()).toHaveLength(1);
  });

  it('names what is wrong with a model.json that does not parse, and starts nothing', async () => {
    await freshStack();
    await writeExport(stack.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      segments: [],
      modelJsonText: '{"entities": [ {"name": "HighValue", "attributes": [',
    });
    const response = await syncHttp(new HttpRequest({ method: 'POST', url: 'http://localhost/api/sync', body: { string: '' } }), context());
    expect(response.status).toBe(422);
    expect(JSON.stringify(response.jsonBody)).toMatch(/model\.json is not valid JSON/);
    await writeExport(stack.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      segments: [],
      modelJsonText: '{"entities": [{"name": "HighValue", "attributes": [{"name": "CustomerId", "dataType": "uuid-ish"}]}]}',
    });
    const typed = await syncHttp(new HttpRequest({ method: 'POST', url: 'http://localhost/api/sync', body: { string: '' } }), context());
    expect(JSON.stringify(typed.jsonBody)).toMatch(/entities\.0\.attributes\.0\.dataType: unknown dataType \\"uuid-ish\\"/);
    expect(await stack.app.deps.runs.listRuns()).toHaveLength(0);
  });

  it('finds partitions in the newest run folder when model.json lists none, and honours headers and delimiters', async () => {
    const config = testConfig({ segments: [{ table: 'HighValue', brazeSegmentId: 'hv' }] });
    await freshStack({ env: { SYNC_CONFIG: JSON.stringify(config) } });
    const container = stack.app.deps.storage.exportContainer;
    await writeExport(container, {
      destination: 'BrazeExport',
      omitPartitions: true,
      segments: [{ table: 'HighValue', runFolder: '2026/11/27/0600', partitions: [csv([[ID(1), 'old@example.com', 'Old', '1']])] }],
    });
    await writeExport(container, {
      destination: 'BrazeExport',
      omitPartitions: true,
      segments: [
        {
          table: 'HighValue',
          runFolder: '2026/11/28/0615',
          partitions: ['EMail;CustomerId;FirstName;LoyaltyPoints\n"new@example.com";"' + ID(1) + '";"New";"2"\n'],
        },
      ],
    });
    // Headered, semicolon-delimited files need fileFormatSettings; with a listing there is none, so use a model.json that says so.
    await writeExport(container, {
      destination: 'BrazeExport',
      segments: [
        {
          table: 'HighValue',
          runFolder: '2026/11/28/0630',
          fileFormatSettings: { $type: 'CsvFormatSettings', columnHeaders: true, delimiter: ';', encoding: 'UTF-8' },
          partitions: ['EMail;CustomerId;FirstName;LoyaltyPoints\r\n"new@example.com";"' + ID(1) + '";"New";"2"\r\n'],
        },
      ],
    });
    await syncTimer(timerTick, context());
    const [created] = await stack.app.deps.runs.listRuns();
    const [run] = await runToEnd(stack, [created.runId]);
    expect(run.status).toBe('completed');
    expect(run.refreshLabel).toBe('2026/11/28/0630');
    expect(stack.braze.profile(`external_id:${ID(1)}`)).toEqual({ email: 'new@example.com', first_name: 'New', loyalty_points: 2, hv: true });
  });

  it('fails a run whose config names a column the export lacks, with a message naming it', async () => {
    const config = testConfig({ fields: { Nickname: 'nickname' } });
    await freshStack({ env: { SYNC_CONFIG: JSON.stringify(config) } });
    await writeStandardExport(stack);
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    expect(outcome.runs).toHaveLength(0);
    expect(outcome.problems[0].error).toMatch(/fields\.Nickname names column "Nickname", which entity "HighValue" does not have/);
  });

  it('keeps the API key and e-mail addresses out of every log line', async () => {
    await freshStack();
    await writeStandardExport(stack);
    await syncTimer(timerTick, context());
    const runs = await stack.app.deps.runs.listRuns();
    await runToEnd(
      stack,
      runs.map((r) => r.runId),
    );
    // The completion line is logged just after the status flips.
    for (let i = 0; i < 100 && !stack.log.lines.some((l) => / completed: /.test(l)); i++) await new Promise((r) => setTimeout(r, 20));
    expect(stack.log.lines.some((l) => / completed: /.test(l))).toBe(true);
    for (const line of stack.log.lines) {
      expect(line).not.toContain(TEST_API_KEY);
      expect(line).not.toMatch(/@example\.com/i);
      expect(line).not.toMatch(/\bAna\b|\bBen\b/);
    }
  });
});
