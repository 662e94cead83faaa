import { Readable } from 'node:stream';
import { atLine, csvFormatOf, readPartition, type PartitionColumns, type PartitionRecord } from '../../shared/ci/partitionReader';
import { reasonKey } from '../../shared/reader/mapPartition';
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

/**
 * A file given as its physical lines, each ended as `ends` says (cycled): the line breaks inside a
 * quoted value are the ones written there. A CR ending followed by an empty line ended with LF would
 * be one CRLF line break, not two lines: such a layout is refused rather than misread by the test.
 */
function layOut(lines: string[], ends: string[] | ((line: number) => string)): { text: string; endOf: (line: number) => string } {
  const endOf = (line: number) => (typeof ends === 'function' ? ends(line) : ends[(line - 1) % ends.length]);
  let text = '';
  lines.forEach((content, i) => {
    if (endOf(i + 1) === '\r' && lines[i + 1] === '' && endOf(i + 2).startsWith('\n')) throw new Error(`line ${i + 1}: CR then an empty LF line is one CRLF`);
    text += content + endOf(i + 1);
  });
  return { text, endOf };
}

/** A header, quoted and unquoted rows, empty lines, values over several lines (an empty line among them). */
const PHYSICAL_LINES = [
  'CustomerId,EMail,Name',
  '"1","a@x.com","Ana"',
  '',
  '2,b@x.com,Bo',
  '"3","c@x.com","two',
  'lines"',
  '"4","d@x.com","three',
  '',
  'more"',
  '5,e@x.com,"Ed"',
  '"6","f@x.com",""',
];

/** What PHYSICAL_LINES hold, with the line breaks inside quotes as written. */
function expectedRows(endOf: (line: number) => string): PartitionRecord[] {
  return [
    { kind: 'row', row: 1, line: 2, values: ['1', 'a@x.com', 'Ana'] },
    { kind: 'row', row: 2, line: 4, values: ['2', 'b@x.com', 'Bo'] },
    { kind: 'row', row: 3, line: 5, values: ['3', 'c@x.com', `two${endOf(5)}lines`] },
    { kind: 'row', row: 4, line: 7, values: ['4', 'd@x.com', `three${endOf(7)}${endOf(8)}more`] },
    { kind: 'row', row: 5, line: 10, values: ['5', 'e@x.com', 'Ed'] },
    { kind: 'row', row: 6, line: 11, values: ['6', 'f@x.com', ''] },
  ];
}

const LINE_ENDINGS: [string, string[] | ((line: number) => string)][] = [
  ['CRLF', ['\r\n']],
  ['LF', ['\n']],
  ['CR', ['\r']],
  ['CRLF and LF by turns', ['\r\n', '\n']],
  ['LF and CRLF by turns', ['\n', '\r\n']],
  ['CR, CRLF and LF by turns', ['\r', '\r\n', '\n']],
  ['LF, CR and CRLF by turns', ['\n', '\r', '\r\n']],
  ['a CRLF header, LF data', (line) => (line === 1 ? '\r\n' : '\n')],
  ['an LF header, CRLF data', (line) => (line === 1 ? '\n' : '\r\n')],
  ['a CRLF file with LF rows appended', (line) => (line < 10 ? '\r\n' : '\n')],
  ['an LF file with CRLF rows appended', (line) => (line < 10 ? '\n' : '\r\n')],
];

describe('line endings', () => {
  it.each(LINE_ENDINGS)('reads %s as every other ending: same rows, same values, same physical lines, in chunks of any size', async (_, ends) => {
    const { text, endOf } = layOut(PHYSICAL_LINES, ends);
    for (const chunkSize of [1, 2, 3, 7, text.length]) {
      const { records } = await read(text, { columnHeaders: true }, chunkSize);
      expect({ chunkSize, records }).toEqual({ chunkSize, records: expectedRows(endOf) });
    }
  });

  it('reads the last row of a file whose last line has no line break, whatever the others end with', async () => {
    for (const [, ends] of LINE_ENDINGS) {
      const { text, endOf } = layOut(PHYSICAL_LINES, ends);
      const { records } = await read(text.slice(0, -endOf(PHYSICAL_LINES.length).length), { columnHeaders: true }, 3);
      expect(records).toEqual(expectedRows(endOf));
    }
  });

  it('reads rows appended with LF to a CRLF file as rows of their own, quoted or not, with no line break left in a value', async () => {
    // Quoted, csv-parse took the LF after the closing quote for text after the value; unquoted, it
    // kept the LF in the last value, or joined the appended rows into one with too many columns.
    const crlf = '"1","a@x.com","Ana"\r\n"2","b@x.com","Bo"\r\n';
    const rows = [
      [1, '1', 'a@x.com', 'Ana'],
      [2, '2', 'b@x.com', 'Bo'],
      [3, '3', 'c@x.com', 'Cy'],
      [4, '4', 'd@x.com', 'Di'],
    ];
    for (const [appended, count] of [
      ['"3","c@x.com","Cy"\n', 3],
      ['3,c@x.com,Cy\n', 3],
      ['3,c@x.com,Cy\n4,d@x.com,Di\n', 4],
      ['"3","c@x.com","Cy"\n"4","d@x.com","Di"\n', 4],
    ] as const) {
      const { records } = await read(crlf + appended);
      expect(records.map((r) => (r.kind === 'row' ? [r.line, ...r.values] : r))).toEqual(rows.slice(0, count));
    }
    // The reverse: an LF file with a CRLF row appended keeps no CR in the row's last value.
    const { records } = await read('1,a@x.com,Ana\n2,b@x.com,Bo\r\n3,c@x.com,Cy\n');
    expect(records.map((r) => (r.kind === 'row' ? r.values[2] : r.reason))).toEqual(['Ana', 'Bo', 'Cy']);
  });

  it('cites the physical line of a rejected row, and reads the rows after it, in a file of mixed line endings', async () => {
    const { text } = layOut(
      ['"1","a@x.com","Ana"', '"2","b@x.com","two', 'lines"', '"3","c@x.com"', '', '"4","d@x.com","Di"', '"5","e@x.com","bad"x', '"6","f@x.com","Fe"'],
      ['\r\n', '\n', '\r'],
    );
    const { records } = await read(text);
    expect(records.map((r) => (r.kind === 'row' ? `${r.row} ok, line ${r.line}` : `${r.row} ${r.reason}${atLine(r.line)}`))).toEqual([
      '1 ok, line 1',
      '2 ok, line 2',
      '3 expected 3 columns, found 2 (line 4)',
      '4 ok, line 6',
      '5 unreadable CSV: a quote closes a value before its end (CSV_INVALID_CLOSING_QUOTE) (line 7)',
      // After an unreadable record its line is not known (see above).
      '6 ok, line 0',
    ]);
  });

  it.each([
    ['UTF-16 with a BOM', 'UTF-16', (text: string) => Buffer.from(`\ufeff${text}`, 'utf16le')],
    ['UTF-16LE without a BOM', 'UTF-16LE', (text: string) => Buffer.from(text, 'utf16le')],
    ['UTF-16BE', 'UTF-16BE', (text: string) => Buffer.from(`\ufeff${text}`, 'utf16le').swap16()],
    ['Windows-1252', 'Windows-1252', (text: string) => Buffer.from(text, 'latin1')],
  ])('reads every line ending alike in %s', async (_, encoding, encode) => {
    for (const [, ends] of LINE_ENDINGS) {
      const { text, endOf } = layOut(PHYSICAL_LINES, ends);
      const bytes = encode(text);
      for (const chunkSize of [1, 3, 7, bytes.length]) {
        const { records } = await read(bytes, { columnHeaders: true, encoding }, chunkSize);
        expect({ chunkSize, records }).toEqual({ chunkSize, records: expectedRows(endOf) });
      }
    }
  });

  it('reads UTF-16LE text whose bytes, out of step by one, spell a delimiter, a quote or a line break', async () => {
    // ⱥ (U+2C65) then Ā (U+0100) are the bytes 65 2C 00 01: "2C 00" is a comma in UTF-16LE, one byte
    // off the characters. The same for a quote (∑ U+2211, then U+0100), an LF (ਊ U+0A0A) and a CR (ഊ U+0D0A).
    const names = ['ⱥĀ', '∑Ā', 'ਊĀ', 'ഊĀ', 'ⱥ\u3000ਊ\u3000ഊ\u3000∑\u3000'];
    const text = names.map((name, i) => `"${i + 1}","x${i}@x.com","${name}"\r\n${i + 1},y${i}@x.com,${name}\r\n`).join('');
    for (const bytes of [Buffer.from(`\ufeff${text}`, 'utf16le'), Buffer.from(text, 'utf16le')]) {
      const { records } = await read(bytes, { encoding: 'UTF-16LE' });
      expect(records.map((r) => (r.kind === 'row' ? r.values[2] : r.reason))).toEqual(names.flatMap((name) => [name, name]));
    }
  });
});

describe('the reason a row has the wrong number of columns', () => {
  it('names two different counts, whatever the line endings, and is counted under what is wrong', async () => {
    // Rows one column short and one too long, in every line ending: the counts a reason names differ.
    for (const [, ends] of LINE_ENDINGS) {
      const { text } = layOut(['"1","a@x.com","Ana"', '"2","b@x.com"', '3,c@x.com,Cy,extra', '"4","d@x.com","Di"'], ends);
      const { records } = await read(text);
      const reasons = records.flatMap((r) => (r.kind === 'invalid' ? [r.reason] : []));
      expect(reasons).toEqual(['expected 3 columns, found 2', 'expected 3 columns, found 4']);
    }
    // With a header the count expected is the header's, not the model's attributes'.
    const { records } = await read('CustomerId,EMail,Name,Extra\n1,a@x.com,Ana\n2,b@x.com,Bo,x\n', { columnHeaders: true });
    expect(records.map((r) => (r.kind === 'row' ? 'ok' : r.reason))).toEqual(['expected 4 columns, found 3', 'ok']);
    // A run counts reasons with their numbers folded: this one's two, folded alike ("expected N
    // columns, found N"), read as if the row had the count expected.
    expect(reasonKey('expected 5 columns, found 4')).toBe('wrong number of columns');
    expect(reasonKey('expected 5 columns, found 12')).toBe('wrong number of columns');
    expect(reasonKey('external_id longer than 512 characters')).toBe('external_id longer than N characters');
    expect(reasonKey('unreadable CSV: a quote closes a value before its end (CSV_INVALID_CLOSING_QUOTE)')).toBe('unreadable CSV');
  });
});
