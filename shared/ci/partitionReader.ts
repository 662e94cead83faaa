import { parse, type CsvError, type Options } from 'csv-parse';
import type { Readable } from 'node:stream';
import { InvalidInputError } from '../errors';
import type { CdmAttribute, FileFormatSettings } from './modelJson';

export type CsvEncoding = 'utf8' | 'utf16le' | 'latin1' | 'ascii';

export interface CsvFormat {
  columnHeaders: boolean;
  delimiter: string;
  encoding: CsvEncoding;
}

/** CDM defaults when a partition has no fileFormatSettings: no header row, comma, UTF-8. */
export function csvFormatOf(settings: FileFormatSettings | undefined, where: string): CsvFormat {
  return {
    columnHeaders: settings?.columnHeaders ?? false,
    delimiter: settings?.delimiter ?? ',',
    encoding: nodeEncoding(settings?.encoding, where),
  };
}

function nodeEncoding(encoding: string | undefined, where: string): CsvEncoding {
  const name = (encoding ?? 'UTF-8').toLowerCase().replace(/[^a-z0-9]/g, '');
  if (name === 'utf8') return 'utf8';
  if (name === 'utf16' || name === 'utf16le' || name === 'unicode') return 'utf16le';
  if (name === 'iso88591' || name === 'latin1' || name === 'windows1252' || name === 'cp1252') return 'latin1';
  if (name === 'ascii' || name === 'usascii') return 'ascii';
  throw new InvalidInputError(`${where}: fileFormatSettings.encoding "${encoding}" is not supported (UTF-8, UTF-16LE, ISO-8859-1, ASCII)`);
}

export type PartitionRecord = { kind: 'row'; row: number; values: string[] } | { kind: 'invalid'; row: number; reason: string };

export interface PartitionColumns {
  /** Column index of each attribute in this file, by attribute name. */
  indexOf: Map<string, number>;
  count: number;
}

/**
 * Streams one partition CSV and yields its data rows in order, with 1-based row numbers (header
 * excluded). Rows that cannot be read (wrong column count, broken quoting) come out as `invalid`
 * with a reason instead of stopping the partition. Memory stays at the parser's buffer, whatever
 * the file's size.
 */
export async function* readPartition(
  body: Readable,
  format: CsvFormat,
  attributes: CdmAttribute[],
  onColumns: (columns: PartitionColumns) => void,
): AsyncGenerator<PartitionRecord> {
  // A record the parser skips is reported with how many records it had emitted before it, so it
  // can be put back in its place in the sequence (no per-record callback: they halve the speed).
  const skipped: { after: number; reason: string }[] = [];
  const parser = parse({
    delimiter: format.delimiter,
    encoding: format.encoding,
    bom: true,
    relax_column_count: true,
    skip_empty_lines: true,
    skip_records_with_error: true,
    on_skip: (error: CsvError | undefined) => {
      skipped.push({ after: Number(error?.records ?? 0), reason: `unreadable CSV: ${error?.message ?? 'parse error'}` });
      return undefined;
    },
  } as unknown as Options);
  body.on('error', (error) => parser.destroy(error));
  body.pipe(parser);

  let expected = attributes.length;
  if (!format.columnHeaders) onColumns(columnsByPosition(attributes));
  let headerPending = format.columnHeaders;
  let emitted = 0;
  let row = 0;

  for await (const values of parser as AsyncIterable<string[]>) {
    while (skipped.length && skipped[0].after <= emitted) yield { kind: 'invalid', row: ++row, reason: skipped.shift()!.reason };
    emitted += 1;
    if (headerPending) {
      headerPending = false;
      expected = values.length;
      onColumns(columnsByHeader(values, attributes));
      continue;
    }
    row += 1;
    if (values.length !== expected) {
      yield { kind: 'invalid', row, reason: `expected ${expected} columns, found ${values.length}` };
      continue;
    }
    yield { kind: 'row', row, values };
  }
  for (const skip of skipped) yield { kind: 'invalid', row: ++row, reason: skip.reason };
  if (headerPending) onColumns(columnsByPosition(attributes));
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
