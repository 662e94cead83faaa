import { parse, type CsvError, type Options } from 'csv-parse';
import type { Readable } from 'node:stream';
import { InvalidInputError } from '../errors';
import type { CdmAttribute, FileFormatSettings } from './modelJson';

export interface CsvFormat {
  columnHeaders: boolean;
  delimiter: string;
  encoding: BufferEncoding;
}

/** CDM defaults when a partition has no fileFormatSettings: no header row, comma, UTF-8. */
export function csvFormatOf(settings: FileFormatSettings | undefined, where: string): CsvFormat {
  return {
    columnHeaders: settings?.columnHeaders ?? false,
    delimiter: settings?.delimiter ?? ',',
    encoding: nodeEncoding(settings?.encoding, where),
  };
}

function nodeEncoding(encoding: string | undefined, where: string): BufferEncoding {
  const name = (encoding ?? 'UTF-8').toLowerCase().replace(/[^a-z0-9]/g, '');
  if (name === 'utf8') return 'utf8';
  if (name === 'utf16' || name === 'utf16le' || name === 'unicode') return 'utf16le';
  if (name === 'iso88591' || name === 'latin1' || name === 'windows1252' || name === 'cp1252') return 'latin1';
  if (name === 'ascii' || name === 'usascii') return 'ascii';
  throw new InvalidInputError(`${where}: fileFormatSettings.encoding "${encoding}" is not supported (UTF-8, UTF-16LE, ISO-8859-1, ASCII)`);
}

export type PartitionRecord =
  | { kind: 'row'; row: number; line: number; values: string[] }
  | { kind: 'invalid'; row: number; line: number; reason: string };

export interface PartitionColumns {
  /** Column index of each attribute in this file, by attribute name. */
  indexOf: Map<string, number>;
  count: number;
}

/**
 * Streams one partition CSV and yields its data rows in order, with 1-based row numbers (header
 * excluded) and the line each row ends on. Rows that cannot be read (wrong column count, broken
 * quoting) come out as `invalid` with a reason instead of stopping the partition. Memory stays at
 * the parser's buffer, whatever the file's size.
 */
export async function* readPartition(
  body: Readable,
  format: CsvFormat,
  attributes: CdmAttribute[],
  onColumns: (columns: PartitionColumns) => void,
): AsyncGenerator<PartitionRecord> {
  // Parser callbacks run in file order; numbering rows there keeps skipped rows in their place.
  const skipped: PartitionRecord[] = [];
  let headerPending = format.columnHeaders;
  let rowCounter = 0;
  const parser = parse({
    delimiter: format.delimiter,
    encoding: format.encoding,
    bom: true,
    relax_column_count: true,
    skip_empty_lines: true,
    skip_records_with_error: true,
    on_skip: (error: CsvError | undefined) => {
      rowCounter += 1;
      const line = (error as { lines?: number } | undefined)?.lines ?? 0;
      skipped.push({ kind: 'invalid', row: rowCounter, line, reason: `unreadable CSV: ${error?.message ?? 'parse error'}` });
      return undefined;
    },
    on_record: (values: string[], context: { lines: number }) => {
      if (headerPending) {
        headerPending = false;
        return { values, line: context.lines, row: 0 };
      }
      rowCounter += 1;
      return { values, line: context.lines, row: rowCounter };
    },
  } as unknown as Options);
  body.on('error', (error) => parser.destroy(error));
  body.pipe(parser);

  let expected = attributes.length;
  if (!format.columnHeaders) onColumns(columnsByPosition(attributes));
  let sawHeader = false;

  for await (const record of parser as AsyncIterable<{ values: string[]; line: number; row: number }>) {
    while (skipped.length && skipped[0].row < record.row) yield skipped.shift()!;
    if (record.row === 0) {
      sawHeader = true;
      const columns = columnsByHeader(record.values, attributes);
      expected = record.values.length;
      onColumns(columns);
      continue;
    }
    if (record.values.length !== expected) {
      yield { kind: 'invalid', row: record.row, line: record.line, reason: `expected ${expected} columns, found ${record.values.length}` };
      continue;
    }
    yield { kind: 'row', row: record.row, line: record.line, values: record.values };
  }
  while (skipped.length) yield skipped.shift()!;
  if (format.columnHeaders && !sawHeader) onColumns(columnsByPosition(attributes));
}

function columnsByPosition(attributes: CdmAttribute[]): PartitionColumns {
  return { indexOf: new Map(attributes.map((a, i) => [a.name, i])), count: attributes.length };
}

function columnsByHeader(header: string[], attributes: CdmAttribute[]): PartitionColumns {
  const indexOf = new Map<string, number>();
  header.forEach((name, i) => {
    const trimmed = name.trim();
    const attribute = attributes.find((a) => a.name === trimmed) ?? attributes.find((a) => a.name.toLowerCase() === trimmed.toLowerCase());
    indexOf.set(attribute?.name ?? trimmed, i);
  });
  return { indexOf, count: header.length };
}
