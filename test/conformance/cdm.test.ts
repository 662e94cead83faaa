import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { csvFormatOf, readPartition, type PartitionRecord } from '../../shared/ci/partitionReader';
import { parseModelJson, type CdmAttribute } from '../../shared/ci/modelJson';
import { convertCell } from '../../shared/ci/dataTypes';
import { DEFAULT_GUARD, type SyncConfig } from '../../shared/config/syncConfig';
import { requestSync } from '../../shared/sync/startSync';
import { startTestStack, type TestStack } from '../helpers/testStack';
import { waitFor } from '../helpers/expectations';
import { makeProfiles, writeRefresh } from '../helpers/profileModel';

/**
 * Microsoft's own model.json files (microsoft/CDM, see cdm/NOTICE.md), laid out as a Customer
 * Insights export and synced end to end against Azurite and the local Braze server, or — for a file
 * that names no attributes — read with the settings it declares. What Braze must hold is written
 * down per case.
 */
const cdmFile = (name: string) => readFileSync(path.join(__dirname, 'cdm', name), 'utf8');

describe('a Power BI dataflow model.json (docs/schema/examples/OrdersProducts)', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('reads the blob snapshot its partition location names, not the blob as it is now', async () => {
    const config: SyncConfig = {
      workspaces: {},
      destinations: [
        {
          name: 'Northwind',
          segments: [{ table: 'Orders', brazeSegmentId: 'northwind_orders' }],
          matching: { customerIdColumn: 'CustomerID', customerIdIsExternalId: true, fallbackIdentifiers: [], aliasLabel: 'ci_customer_id' },
          fields: { ShipCity: 'ship_city', Freight: 'freight' },
          leaverValue: null,
          dryRun: false,
          subscriptions: [],
          membership: { mode: 'flags' },
          notify: [],
          guard: { ...DEFAULT_GUARD },
        },
      ],
    };
    stack = await startTestStack({ config, env: { SYNC_CONFIG: JSON.stringify(config) } });
    const container = stack.app.deps.storage.exportContainer;
    await container.createIfNotExists();
    const model = JSON.parse(cdmFile('OrdersProducts.model.json')) as {
      entities: { name: string; attributes: CdmAttribute[]; partitions: { location: string }[] }[];
    };
    const orders = model.entities.find((e) => e.name === 'Orders')!;
    // One order per customer (a second row of a profile in a segment is a duplicate), headerless, CDM's default quoting.
    const ordersCsv = (customers: string[], city: string) =>
      customers
        .map((customer, i) =>
          orders.attributes
            .map((a) => {
              const value: Record<string, string> = {
                OrderID: String(10248 + i),
                CustomerID: customer,
                EmployeeID: '5',
                OrderDate: '1996-07-04T00:00:00Z',
                ShipVia: '3',
                Freight: '32.38',
                ShipCity: city,
              };
              return `"${value[a.name] ?? ''}"`;
            })
            .join(','),
        )
        .join('\r\n') + '\r\n';
    // The dataflow wrote Orders.csv and took a snapshot; the blob changed after it.
    const blob = container.getBlockBlobClient('CustomerInsights_cdm/Northwind/Orders.csv');
    const atSnapshot = ordersCsv(['VINET', 'TOMSP', 'HANAR'], 'Reims');
    await blob.upload(atSnapshot, Buffer.byteLength(atSnapshot));
    const { snapshot } = await blob.createSnapshot();
    const later = ordersCsv(['VINET', 'LATER'], 'Elsewhere');
    await blob.upload(later, Buffer.byteLength(later));
    // The location as Microsoft wrote it, on this account and container, with the snapshot taken here.
    const original = orders.partitions[0].location;
    expect(original).toMatch(/\/Orders\.csv\?snapshot=2018-11-14T19:37:51\.7526830Z$/);
    orders.partitions[0].location = `${blob.url}?snapshot=${snapshot}`;
    const products = model.entities.find((e) => e.name === 'Products')!;
    products.partitions[0].location = products.partitions[0].location.replace(/^https:\/\/[^/]+\/[^/]+\//, `${container.url}/CustomerInsights_cdm/Northwind/`);
    const text = JSON.stringify(model);
    await container.getBlockBlobClient('CustomerInsights_cdm/Northwind/model.json').upload(text, Buffer.byteLength(text));

    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    expect(outcome.problems).toEqual([]);
    const runId = outcome.runs[0].runId;
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))?.status === 'completed', 60_000);
    expect(await stack.app.deps.runs.get(runId)).toMatchObject({ rowsRead: 3, usersDelivered: 3, usersFailed: 0 });
    for (const customer of ['VINET', 'TOMSP', 'HANAR'])
      expect(stack.braze.profile(`external_id:${customer}`)).toMatchObject({ northwind_orders: true, ship_city: 'Reims', freight: 32.38 });
    expect(stack.braze.profile('external_id:LATER')).toBeUndefined();
  });

  it('refuses a location with a shared access signature, or another query, saying how to fix the export', async () => {
    stack = await startTestStack();
    const container = stack.app.deps.storage.exportContainer;
    await container.createIfNotExists();
    const model = JSON.parse(cdmFile('OrdersProducts.model.json')) as { entities: { name: string; partitions: { location: string }[] }[] };
    for (const [query, reason] of [
      ['sv=2024-08-04&sr=b&sig=abc%3D', /shared access signature: a credential/],
      ['comp=list', /has a query \(comp\) the connector does not read: only \?snapshot=<time> is; export the partition without it/],
    ] as const) {
      for (const entity of model.entities) entity.partitions[0].location = `${container.url}/CustomerInsights_cdm/BrazeExport/${entity.name}.csv?${query}`;
      const entities = model.entities.map((e) => ({ ...e, name: e.name === 'Orders' ? 'HighValue' : 'Newsletter' }));
      const text = JSON.stringify({ ...model, entities });
      await container.getBlockBlobClient('CustomerInsights_cdm/BrazeExport/model.json').upload(text, Buffer.byteLength(text));
      const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
      expect(outcome.runs).toEqual([]);
      expect(outcome.problems).toEqual([expect.objectContaining({ retryable: false, error: expect.stringMatching(reason) })]);
      // The signature itself is never repeated.
      expect(outcome.problems[0].error).not.toContain('sig=abc');
    }
  });
});

describe('CSV settings as CDM test data writes them (TestLoadingCsvPartitionTraits)', () => {
  // Parsed in each test, so each fails on its own when the file is refused.
  const traits = () =>
    parseModelJson(cdmFile('TestLoadingCsvPartitionTraits.model.json'), 'TestLoadingCsvPartitionTraits/model.json').entities[0].partitions[0];
  const attributes: CdmAttribute[] = [
    { name: 'CustomerId', dataType: 'string' },
    { name: 'Name', dataType: 'string' },
    { name: 'City', dataType: 'string' },
  ];
  const read = async (text: string) => {
    const records: PartitionRecord[] = [];
    for await (const record of readPartition(
      Readable.from([Buffer.from(text, 'ascii')]),
      csvFormatOf(traits().fileFormatSettings, 'p'),
      attributes,
      () => undefined,
    ))
      records.push(record);
    return records;
  };

  it('reads "columnHeaders": "false" as the boolean it means, and every setting the file declares', () => {
    const partition = traits();
    expect(partition.fileFormatSettings).toMatchObject({ columnHeaders: false, delimiter: ';' });
    expect(csvFormatOf(partition.fileFormatSettings, 'p')).toEqual({
      columnHeaders: false,
      delimiter: ';',
      // ASCII is read as UTF-8, its superset.
      encoding: 'utf8',
      quoteStyle: 'none',
      csvStyle: 'quoteAfterDelimiter',
    });
    // A location without a path the connector can follow is still a partition the schema allows; reading it is the export's business.
    expect(partition.location).toBe('http://contoso.com/data-partitions.csv');
  });

  it('QuoteStyle.None: quote characters have no significance — four rows with quotes in them are four rows, as written', async () => {
    const records = await read('1;Dan "The Man";Reims\n2;"Ana";Lyon\n3;O"Brien;"Nice\n4;"unclosed;Paris\n');
    expect(records).toEqual([
      { kind: 'row', row: 1, line: 1, values: ['1', 'Dan "The Man"', 'Reims'] },
      { kind: 'row', row: 2, line: 2, values: ['2', '"Ana"', 'Lyon'] },
      { kind: 'row', row: 3, line: 3, values: ['3', 'O"Brien', '"Nice'] },
      { kind: 'row', row: 4, line: 4, values: ['4', '"unclosed', 'Paris'] },
    ]);
  });

  it('CsvStyle.QuoteAfterDelimiter with QuoteStyle.Csv: a quote opens a value only after a delimiter', async () => {
    const format = csvFormatOf({ ...traits().fileFormatSettings, quoteStyle: 'QuoteStyle.Csv' }, 'p');
    const records: PartitionRecord[] = [];
    const text = '1;Dan "The Man";Reims\n2;"Ana; the first";Lyon\n3;O"Brien;Nice\n';
    for await (const record of readPartition(Readable.from([Buffer.from(text)]), format, attributes, () => undefined)) records.push(record);
    expect(records.map((r) => (r.kind === 'row' ? r.values : r.reason))).toEqual([
      ['1', 'Dan "The Man"', 'Reims'],
      ['2', 'Ana; the first', 'Lyon'],
      ['3', 'O"Brien', 'Nice'],
    ]);
  });

  it('refuses a quoteStyle or csvStyle the schema does not define, naming the ones it does', () => {
    expect(() => csvFormatOf({ quoteStyle: 'QuoteStyle.Single' }, 'p')).toThrow(
      /quoteStyle "QuoteStyle.Single" is not one the CDM schema defines \(QuoteStyle.Csv, QuoteStyle.None\)/,
    );
    expect(() => csvFormatOf({ csvStyle: 'sometimes' }, 'p')).toThrow(/CsvStyle.QuoteAlways, CsvStyle.QuoteAfterDelimiter/);
  });
});

describe('model.json as the schema allows it (docs/schema/modeljsonschema.json: a partition requires only its name)', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('skips a partition without a location, with a note, and reads the others', async () => {
    stack = await startTestStack();
    const container = stack.app.deps.storage.exportContainer;
    const { modelJsonPath } = await writeRefresh(container, makeProfiles(1, 30).values(), '2026/11/28/0600', 1);
    const model = JSON.parse((await container.getBlobClient(modelJsonPath).downloadToBuffer()).toString('utf8')) as { entities: { partitions: object[] }[] };
    for (const entity of model.entities) entity.partitions.push({ name: 'NotWrittenYet' });
    const text = JSON.stringify(model);
    await container.getBlockBlobClient(modelJsonPath).upload(text, Buffer.byteLength(text));
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    expect(outcome.problems).toEqual([]);
    const runId = outcome.runs[0].runId;
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))?.status === 'completed', 60_000);
    expect(await stack.app.deps.runs.get(runId)).toMatchObject({ usersDelivered: 30, usersFailed: 0 });
    expect(stack.log.lines.filter((line) => line.includes('partition "NotWrittenYet" has no location; skipped'))).toHaveLength(2);
  });
});

describe('date and time values as CDM types them, on any machine', () => {
  const tz = process.env.TZ;
  afterEach(() => {
    process.env.TZ = tz;
  });

  it('date is YYYY-MM-DD, time is the time as written, date-only forms are UTC midnight, impossible days are rejected', () => {
    for (const zone of ['UTC', 'America/Los_Angeles', 'Europe/Berlin', 'Asia/Kolkata', 'Pacific/Kiritimati']) {
      process.env.TZ = zone;
      expect(convertCell('2019-05-18', 'date')).toEqual({ ok: true, value: '2019-05-18' });
      expect(convertCell('05/18/2019', 'date')).toEqual({ ok: true, value: '2019-05-18' });
      expect(convertCell('1/2/2019', 'date')).toEqual({ ok: true, value: '2019-01-02' });
      expect(convertCell('Thu May 16 2019', 'date')).toEqual({ ok: true, value: '2019-05-16' });
      expect(convertCell('05/18/2019', 'dateTime')).toEqual({ ok: true, value: '2019-05-18T00:00:00.000Z' });
      expect(convertCell('Thu May 16 2019', 'dateTime')).toEqual({ ok: true, value: '2019-05-16T00:00:00.000Z' });
      expect(convertCell('10:05:00', 'time')).toEqual({ ok: true, value: '10:05:00' });
      expect(convertCell('23:59:59.5', 'time')).toEqual({ ok: true, value: '23:59:59.5' });
      expect(convertCell('24:00', 'time')).toEqual({ ok: false, reason: 'not a time of day (HH:MM[:SS[.fff]])' });
      expect(convertCell('2024-02-30T04:05:06Z', 'dateTime')).toEqual({ ok: false, reason: 'not a date/time' });
      expect(convertCell('2024-04-31', 'date')).toEqual({ ok: false, reason: 'not a date' });
      expect(convertCell('Feb 30 2024', 'dateTime')).toEqual({ ok: false, reason: 'not a date/time' });
      expect(convertCell('2024-02-29', 'date')).toEqual({ ok: true, value: '2024-02-29' });
      // In a daylight-saving gap of the machine's zone too (02:30 does not exist in Berlin on 2019-03-31).
      expect(convertCell('3/31/2019 02:30', 'dateTime')).toEqual({ ok: true, value: '2019-03-31T02:30:00.000Z' });
      // A dash is no offset without a time; JavaScript's own text with its zone's name is that instant.
      expect(convertCell('05-16-2019', 'date')).toEqual({ ok: true, value: '2019-05-16' });
      expect(convertCell('Thu May 16 2019 10:00:00 GMT+0200 (Central European Summer Time)', 'dateTime')).toEqual({
        ok: true,
        value: '2019-05-16T08:00:00.000Z',
      });
      // Impossible days in any form, and two-digit years (a guess), are rejected.
      for (const text of ['2/30/19', '02-30-2019', '31 Feb 2019', '2019/02/30', '1/2/45'])
        expect({ text, converted: convertCell(text, 'dateTime') }).toEqual({ text, converted: { ok: false, reason: 'not a date/time' } });
    }
  });
});
