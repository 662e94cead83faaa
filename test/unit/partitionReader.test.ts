import { Readable } from 'node:stream';
import { csvFormatOf, readPartition, type PartitionColumns, type PartitionRecord } from '../../shared/ci/partitionReader';
import type { CdmAttribute } from '../../shared/ci/modelJson';

const attributes: CdmAttribute[] = [
  { name: 'CustomerId', dataType: 'GUID' },
  { name: 'EMail', dataType: 'string' },
  { name: 'Name', dataType: 'string' },
];

async function read(text: string | Buffer, settings?: Parameters<typeof csvFormatOf>[0], chunkSize = 7) {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8');
  // Small chunks: quoted line breaks and the BOM must survive arbitrary chunk boundaries.
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  const records: PartitionRecord[] = [];
  let columns: PartitionColumns | undefined;
  for await (const record of readPartition(Readable.from(chunks), csvFormatOf(settings, 'test'), attributes, (c) => (columns = c))) records.push(record);
  return { records, columns: columns! };
}

describe('reading a partition CSV', () => {
  it('reads CDM default files: no header, quote-always, CRLF, a UTF-8 BOM, empty values', async () => {
    const { records, columns } = await read('\ufeff"1","a@x.com","Ana"\r\n"2","",""\r\n');
    expect(records).toEqual([
      { kind: 'row', row: 1, line: 1, values: ['1', 'a@x.com', 'Ana'] },
      { kind: 'row', row: 2, line: 2, values: ['2', '', ''] },
    ]);
    expect(columns.indexOf.get('CustomerId')).toBe(0);
  });

  it('keeps doubled quotes, delimiters and line breaks inside quoted values', async () => {
    const { records } = await read('"1","a@x.com","Dan ""The Man"", Jr.\nsecond line"\n"2","b@x.com","Bo"\n');
    expect(records.map((r) => (r.kind === 'row' ? r.values[2] : r.reason))).toEqual(['Dan "The Man", Jr.\nsecond line', 'Bo']);
    expect(records.map((r) => r.row)).toEqual([1, 2]);
  });

  it('rejects a row with the wrong column count and reads on', async () => {
    const { records } = await read('"1","a@x.com","Ana"\n"2","b@x.com"\n"3","c@x.com","Cy","extra"\n"4","d@x.com","Di"\n');
    expect(records.map((r) => (r.kind === 'row' ? `ok ${r.row}` : `${r.row}: ${r.reason}`))).toEqual([
      'ok 1',
      '2: expected 3 columns, found 2',
      '3: expected 3 columns, found 4',
      'ok 4',
    ]);
  });

  it('tells the physical line each row starts on: after a header, empty lines, values over several lines (CRLF too), up to an unreadable record', async () => {
    const text =
      'CustomerId,EMail,Name\r\n1,a@x.com,Ana\r\n\r\n2,b@x.com,"two\r\nlines"\r\n3,c@x.com,"three\nmore\nlines"\r\n4,d@x.com\r\n5,e@x.com,"bad"x\r\n6,f@x.com,Fe\r\n';
    const { records } = await read(text, { columnHeaders: true });
    expect(records.map((r) => [r.kind, r.row, r.line])).toEqual([
      ['row', 1, 2],
      ['row', 2, 4],
      ['row', 3, 6],
      ['invalid', 4, 9],
      ['invalid', 5, 10],
      // The row after a broken quote is a row of its own (csv-parse read on as if the quote were open);
      // where it starts is not known: the parser's own count is off for CRLF inside quotes.
      ['row', 6, 0],
    ]);
  });

  it('reads the rows after a value whose closing quote is followed by more text as rows of their own', async () => {
    // csv-parse read on as if the quote were still open: rows 2 and 3 became one unreadable row.
    for (const eol of ['\n', '\r\n']) {
      const { records } = await read(['1,e@x.com,"bad"x', '2,f@x.com,Fe', '3,g@x.com,"Gi"', ''].join(eol));
      expect(records.map((r) => (r.kind === 'row' ? r.values.join('|') : `${r.line}: ${r.reason}`))).toEqual([
        '1: unreadable CSV: a quote closes a value before its end (CSV_INVALID_CLOSING_QUOTE)',
        '2|f@x.com|Fe',
        '3|g@x.com|Gi',
      ]);
    }
  });

  it('reports a row with broken quoting instead of stopping the partition', async () => {
    const { records } = await read('"1","a@x.com","Ana"\n"2","b@x.com","B"o"\n"3","c@x.com","Cy"\n');
    expect(records[0]).toMatchObject({ kind: 'row', row: 1 });
    expect(records[1]).toMatchObject({ kind: 'invalid', row: 2, line: 2, reason: expect.stringMatching(/unreadable CSV/) });
    expect(records.at(-1)).toMatchObject({ kind: 'row', row: 3, values: ['3', 'c@x.com', 'Cy'] });
  });

  it('honours fileFormatSettings: a header row in any column order, another delimiter, another encoding', async () => {
    const latin1 = Buffer.from('Name;CustomerId;EMail\r\n"Zoë";"9";"z@x.com"\r\n', 'latin1');
    const { records, columns } = await read(latin1, { columnHeaders: true, delimiter: ';', encoding: 'ISO-8859-1' });
    expect(records).toEqual([{ kind: 'row', row: 1, line: 2, values: ['Zoë', '9', 'z@x.com'] }]);
    expect(columns.indexOf.get('CustomerId')).toBe(1);
    expect(columns.indexOf.get('Name')).toBe(0);
  });

  it('reads Windows-1252 (and ISO-8859-1, as the WHATWG Encoding Standard does) with € and curly quotes, UTF-16 either way round, ASCII as UTF-8', async () => {
    // 0x80 €, 0x92 ’, 0xE9 é: the bytes a Windows export labelled Latin-1 carries.
    const cp1252 = Buffer.concat([Buffer.from('"1","a@x.com","'), Buffer.from([0x80, 0x92, 0xe9]), Buffer.from('"\r\n')]);
    for (const encoding of ['Windows-1252', 'ISO-8859-1']) {
      const { records } = await read(cp1252, { encoding });
      expect(records).toEqual([{ kind: 'row', row: 1, line: 1, values: ['1', 'a@x.com', '€’é'] }]);
    }
    const text = '\ufeff"1","a@x.com","Zoë €"\r\n"2","b@x.com","Bo"\r\n';
    const utf16be = Buffer.from(Buffer.from(text, 'utf16le').swap16());
    for (const [bytes, encoding] of [
      [utf16be, 'UTF-16BE'],
      [Buffer.from(text, 'utf16le'), 'UTF-16'],
    ] as const) {
      const { records } = await read(bytes, { encoding });
      expect(records.map((r) => (r.kind === 'row' ? r.values[2] : r.reason))).toEqual(['Zoë €', 'Bo']);
    }
    const { records } = await read(Buffer.from('"1","a@x.com","Zoë"\n', 'utf8'), { encoding: 'ASCII' });
    expect(records).toEqual([{ kind: 'row', row: 1, line: 1, values: ['1', 'a@x.com', 'Zoë'] }]);
  });

  it('refuses an encoding it cannot read, naming it', () => {
    expect(() => csvFormatOf({ encoding: 'EBCDIC' }, 'model.json partition P1')).toThrow(
      /model\.json partition P1: fileFormatSettings\.encoding "EBCDIC" is not supported/,
    );
  });

  it('streams: a large partition is read without being held whole', async () => {
    const rows = 50_000;
    async function* generate() {
      for (let i = 0; i < rows; i++) yield Buffer.from(`"${i}","u${i}@x.com","Name ${i}"\n`);
    }
    let count = 0;
    for await (const record of readPartition(Readable.from(generate()), csvFormatOf(undefined, 't'), attributes, () => undefined))
      if (record.kind === 'row') count += 1;
    expect(count).toBe(rows);
  });
});
