import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { csvFormatOf, readPartition, type PartitionColumns, type PartitionRecord } from '../../shared/ci/partitionReader';

/**
 * csv-spectrum's cases (see csv-spectrum/NOTICE.md): each CSV, read as a partition with a header row
 * (`"columnHeaders": true`), must give exactly the rows its JSON lists — in chunks of any size.
 */
const folder = path.join(__dirname, 'csv-spectrum');
const cases = readdirSync(path.join(folder, 'csvs')).map((file) => file.replace(/\.csv$/, ''));

describe('csv-spectrum', () => {
  it('has its cases here', () => {
    expect(cases.length).toBe(11);
  });

  for (const name of cases) {
    it(`${name}: every row as csv-spectrum expects it`, async () => {
      const bytes = readFileSync(path.join(folder, 'csvs', `${name}.csv`));
      const expected = JSON.parse(readFileSync(path.join(folder, 'json', `${name}.json`), 'utf8')) as Record<string, string>[];
      for (const chunkSize of [1, 5, bytes.length]) {
        const chunks: Buffer[] = [];
        for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
        const header = Object.keys(expected[0]);
        let columns: PartitionColumns | undefined;
        const records: PartitionRecord[] = [];
        const format = csvFormatOf({ columnHeaders: true }, name);
        const attributes = header.map((column) => ({ name: column, dataType: 'string' as const }));
        for await (const record of readPartition(Readable.from(chunks), format, attributes, (c) => (columns = c))) records.push(record);
        const rows = records.map((r) => (r.kind === 'row' ? Object.fromEntries(header.map((column) => [column, r.values[columns!.indexOf.get(column)!]])) : r));
        expect({ chunkSize, rows }).toEqual({ chunkSize, rows: expected });
      }
    });
  }
});
