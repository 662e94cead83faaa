import { parse, type CsvError, type Options } from 'csv-parse';
import iconv from 'iconv-lite';
import type { Readable } from 'node:stream';
import { InvalidInputError } from '../errors';
import type { CdmAttribute, FileFormatSettings } from './modelJson';

/** `latin1` and `ascii` are kept for runs recorded before windows1252 and utf16be were read (and are read as before). */
export type CsvEncoding = 'utf8' | 'utf16le' | 'utf16be' | 'windows1252' | 'latin1' | 'ascii';

export interface CsvFormat {
  columnHeaders: boolean;
  delimiter: string;
  encoding: CsvEncoding;
  /** `none`: QuoteStyle.None, "quote characters have no significance" (Power Query). Absent: csv. */
  quoteStyle?: 'csv' | 'none';
  /** `quoteAfterDelimiter`: CsvStyle.QuoteAfterDelimiter, a quote is significant only right after a delimiter (or at a line's start). Absent: always. */
  csvStyle?: 'quoteAlways' | 'quoteAfterDelimiter';
}

/** CDM defaults when a partition has no fileFormatSettings: no header row, comma, UTF-8, QuoteStyle.Csv, CsvStyle.QuoteAlways. */
export function csvFormatOf(settings: FileFormatSettings | undefined, where: string): CsvFormat {
  return {
    columnHeaders: settings?.columnHeaders ?? false,
    delimiter: settings?.delimiter ?? ',',
    encoding: nodeEncoding(settings?.encoding, where),
    quoteStyle: styleOf(settings?.quoteStyle, 'quoteStyle', { 'QuoteStyle.Csv': 'csv', 'QuoteStyle.None': 'none' } as const, where),
    csvStyle: styleOf(
      settings?.csvStyle,
      'csvStyle',
      { 'CsvStyle.QuoteAlways': 'quoteAlways', 'CsvStyle.QuoteAfterDelimiter': 'quoteAfterDelimiter' } as const,
      where,
    ),
  };
}

/** One of the values the CDM model.json schema enumerates (case and the `QuoteStyle.` prefix aside); anything else is refused, naming what is read. */
function styleOf<V extends string>(value: string | undefined, setting: string, known: Record<string, V>, where: string): V {
  const entries = Object.entries(known);
  if (value === undefined) return entries[0][1];
  const wanted = value.trim().toLowerCase();
  const match = entries.find(([name]) => name.toLowerCase() === wanted || name.split('.')[1].toLowerCase() === wanted);
  if (match) return match[1];
  throw new InvalidInputError(`${where}: fileFormatSettings.${setting} "${value}" is not one the CDM schema defines (${Object.keys(known).join(', ')})`);
}

/**
 * The encodings CDM writers name. ISO-8859-1 is read as Windows-1252, as the WHATWG Encoding
 * Standard does (files labelled Latin-1 carry € and curly quotes in 0x80–0x9F); ASCII as UTF-8,
 * its superset, so a mislabelled file keeps its accents instead of losing the high bit.
 */
function nodeEncoding(encoding: string | undefined, where: string): CsvEncoding {
  const name = (encoding ?? 'UTF-8').toLowerCase().replace(/[^a-z0-9]/g, '');
  if (name === 'utf8' || name === 'ascii' || name === 'usascii') return 'utf8';
  if (name === 'utf16' || name === 'utf16le' || name === 'unicode') return 'utf16le';
  if (name === 'utf16be' || name === 'unicodefffe' || name === 'bigendianunicode') return 'utf16be';
  if (name === 'iso88591' || name === 'latin1' || name === 'windows1252' || name === 'cp1252') return 'windows1252';
  throw new InvalidInputError(
    `${where}: fileFormatSettings.encoding "${encoding}" is not supported (UTF-8, UTF-16LE, UTF-16BE, ISO-8859-1/Windows-1252, ASCII)`,
  );
}

/**
 * Encodings transcoded to UTF-8 on the way in (iconv-lite, streaming): the ones csv-parse cannot
 * decode, and UTF-16LE, which it decodes but matches byte by byte at every offset, where the high
 * byte of one character and the low byte of the next can spell a comma, a quote or a line break
 * (ⱥ then Ā are 65 2C 00 01: "2C 00" is a comma). In UTF-8 no byte of a character is one of those.
 */
const TRANSCODED: Partial<Record<CsvEncoding, string>> = { utf16le: 'utf-16le', utf16be: 'utf-16be', windows1252: 'windows-1252' };

/** The longest record a partition may hold, in characters. */
export const MAX_RECORD_CHARS = 1024 * 1024;

/**
 * csv-parse's messages quote the offending value ("Invalid Opening Quote: … value is
 * \"ana@example.com\""), so reasons are built from its error code and position, never its text.
 */
const CSV_ERRORS: Record<string, string> = {
  CSV_INVALID_OPENING_QUOTE: 'a quote opens in the middle of a value',
  CSV_INVALID_CLOSING_QUOTE: 'a quote closes a value before its end',
  CSV_QUOTE_NOT_CLOSED: 'a quote is never closed',
  CSV_RECORD_INCONSISTENT_FIELDS_LENGTH: 'wrong number of columns',
  CSV_RECORD_INCONSISTENT_COLUMNS: 'wrong number of columns',
  CSV_INVALID_ARGUMENT: 'unreadable record',
  INVALID_OPENING_QUOTE: 'a quote opens in the middle of a value',
};

export function describeCsvError(error: { code?: string } | undefined): string {
  const code = error?.code ?? 'CSV_ERROR';
  const what = CSV_ERRORS[code] ?? 'unreadable record';
  return `unreadable CSV: ${what} (${code})`;
}

/** The parser options every partition is read with (the benchmark's parse floor uses them too). */
export function csvParserOptions(format: CsvFormat) {
  return {
    delimiter: format.delimiter,
    encoding: (TRANSCODED[format.encoding] ? 'utf8' : format.encoding) as BufferEncoding,
    // QuoteStyle.None: a quote is a character like any other.
    quote: format.quoteStyle === 'none' ? false : '"',
    // QuoteAfterDelimiter: a quote inside an unquoted value (Dan "The Man", O"Brien) is kept as written.
    relax_quotes: format.csvStyle === 'quoteAfterDelimiter',
    bom: true,
    // Any line ending ends a record, whatever the file's first line ends with: left to itself
    // csv-parse takes the first one for the whole file, and a row appended with LF to a CRLF file
    // is then unreadable (or keeps the LF in its last value). CRLF before CR, so a CRLF is one line end.
    record_delimiter: ['\r\n', '\n', '\r'],
    relax_column_count: true,
    skip_empty_lines: true,
    skip_records_with_error: true,
    // An unclosed quote or a file in another encoding than declared must not buffer the whole partition.
    max_record_size: MAX_RECORD_CHARS,
  } satisfies Options;
}

/**
 * `row`: 1-based data row (header excluded). `line`: the physical line of the file the record starts
 * on, 0 when it is not known (after an unreadable record, whose extent the parser does not tell).
 */
export type PartitionRecord = { kind: 'row'; row: number; line: number; values: string[] } | { kind: 'invalid'; row: number; line: number; reason: string };

/** " (line N)" for a reason, or nothing when the line is not known. */
export function atLine(line: number): string {
  return line > 0 ? ` (line ${line})` : '';
}

/** The line breaks inside a record's values, as the parser ends lines: each CRLF, LF or lone CR one. */
function lineBreaksIn(values: string[]): number {
  let n = 0;
  for (const value of values) {
    for (let at = value.indexOf('\n'); at >= 0; at = value.indexOf('\n', at + 1)) n += 1;
    for (let at = value.indexOf('\r'); at >= 0; at = value.indexOf('\r', at + 1)) if (value.charCodeAt(at + 1) !== 10) n += 1;
  }
  return n;
}

export interface PartitionColumns {
  /** Column index of each attribute in this file, by attribute name. */
  indexOf: Map<string, number>;
  count: number;
}

/**
 * Streams one partition CSV and yields its data rows in order, with 1-based row numbers (header
 * excluded), in batches of whatever the parser has ready: the caller's per-row work stays
 * synchronous and awaits once per batch. Rows that cannot be read (wrong column count, broken
 * quoting) come out as `invalid` with a reason instead of stopping the partition. Memory stays at
 * the parser's buffer, whatever the file's size.
 */
export async function* readPartitionBatches(
  body: Readable,
  format: CsvFormat,
  attributes: CdmAttribute[],
  onColumns: (columns: PartitionColumns) => void,
  where = 'partition',
): AsyncGenerator<PartitionRecord[]> {
  // A record the parser skips is reported with how many records it had emitted before it, so it
  // can be put back in its place in the sequence (no per-record callback: they halve the speed).
  const skipped: { after: number; line: number; startLine: number; reason: string }[] = [];
  let fatal: InvalidInputError | undefined;
  // Where each record starts, counted here as the parser hands records over (its own count is off
  // by one per CRLF inside a quoted value): a record ends one line plus its inner newlines after it
  // starts, and the empty lines the parser skips come between. How far an unreadable record went
  // only the parser knows, by that same count: after one, the lines of the rows are not known (0).
  const starts: number[] = [];
  let startsHead = 0;
  let nextLine = 1;
  let emptySeen = 0;
  let lost = false;
  const upcoming = () => (lost ? 0 : nextLine + (Number(parser.info.empty_lines) - emptySeen));
  const parser = parse({
    ...csvParserOptions(format),
    on_skip: (error: CsvError | undefined) => {
      const line = Number(error?.lines ?? 0);
      if (error?.code === 'CSV_MAX_RECORD_SIZE') {
        // The parser cannot find the next record after this one: the rest of the partition is unreadable.
        fatal ??= new InvalidInputError(
          `${where}: the record at line ${upcoming() || line} is longer than ${MAX_RECORD_CHARS / 1024 / 1024} MiB (an unclosed quote, or an encoding other than the one declared); the partition cannot be read past it`,
        );
        parser.destroy(fatal);
        return undefined;
      }
      if (error?.code === 'CSV_INVALID_CLOSING_QUOTE') {
        // csv-parse goes on as if the value's quote were still open, and swallows the rows after it
        // into this one (up to the next quote, or the end of the partition): the value is closed
        // here, so the unreadable record ends where its line ends.
        const state = (parser as unknown as { api?: { state?: { quoting?: boolean } } }).api?.state;
        if (state) state.quoting = false;
      }
      // One broken line can raise several errors; it is one rejected row.
      if (skipped.length && skipped[skipped.length - 1].line === line && line > 0) return undefined;
      skipped.push({ after: Number(error?.records ?? 0), line, startLine: upcoming(), reason: describeCsvError(error) });
      lost = true;
      return undefined;
    },
  } as unknown as Options);
  const push = parser.push.bind(parser);
  parser.push = (record: unknown) => {
    if (Array.isArray(record)) {
      const start = upcoming();
      starts.push(start);
      if (!lost) {
        emptySeen = Number(parser.info.empty_lines);
        nextLine = start + 1 + lineBreaksIn(record as string[]);
      }
    }
    return push(record);
  };
  const lineOfNext = () => {
    const line = starts[startsHead++];
    if (startsHead > 4096) {
      starts.splice(0, startsHead);
      startsHead = 0;
    }
    return line;
  };
  body.on('error', (error) => parser.destroy(error));
  const transcoding = TRANSCODED[format.encoding];
  if (transcoding) {
    const decode = iconv.decodeStream(transcoding);
    const encode = iconv.encodeStream('utf8');
    for (const stage of [decode, encode]) stage.on('error', (error: Error) => parser.destroy(error));
    body.pipe(decode).pipe(encode).pipe(parser);
  } else body.pipe(parser);

  let expected = attributes.length;
  if (!format.columnHeaders) onColumns(columnsByPosition(attributes));
  let headerPending = format.columnHeaders;
  let emitted = 0;
  let row = 0;

  try {
    for await (const values of readableBatches<string[]>(parser)) {
      const batch: PartitionRecord[] = [];
      for (const record of values) {
        while (skipped.length && skipped[0].after <= emitted) {
          const skip = skipped.shift()!;
          batch.push({ kind: 'invalid', row: ++row, line: skip.startLine, reason: skip.reason });
        }
        emitted += 1;
        const line = lineOfNext();
        if (headerPending) {
          headerPending = false;
          expected = record.length;
          onColumns(columnsByHeader(record, attributes));
          continue;
        }
        row += 1;
        batch.push(
          record.length === expected
            ? { kind: 'row', row, line, values: record }
            : { kind: 'invalid', row, line, reason: `expected ${expected} columns, found ${record.length}` },
        );
      }
      if (batch.length) yield batch;
    }
  } catch (error) {
    throw fatal ?? error;
  }
  if (fatal) throw fatal;
  if (skipped.length) yield skipped.map((skip) => ({ kind: 'invalid', row: ++row, line: skip.startLine, reason: skip.reason }));
  if (headerPending) onColumns(columnsByPosition(attributes));
}

/** The same rows one at a time. */
export async function* readPartition(
  body: Readable,
  format: CsvFormat,
  attributes: CdmAttribute[],
  onColumns: (columns: PartitionColumns) => void,
  where = 'partition',
): AsyncGenerator<PartitionRecord> {
  for await (const batch of readPartitionBatches(body, format, attributes, onColumns, where)) yield* batch;
}

/** Everything an object stream has ready, at once; waits only when it has nothing. */
async function* readableBatches<T>(stream: Readable): AsyncGenerator<T[]> {
  for (;;) {
    const batch: T[] = [];
    for (let item = stream.read() as T | null; item !== null; item = stream.read() as T | null) batch.push(item);
    if (batch.length) {
      yield batch;
      continue;
    }
    if (stream.readableEnded || stream.destroyed) {
      if (stream.errored) throw stream.errored;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        stream.off('readable', done);
        stream.off('end', done);
        stream.off('close', done);
        stream.off('error', failed);
        resolve();
      };
      const failed = (error: Error) => {
        done();
        reject(error);
      };
      stream.on('readable', done);
      stream.on('end', done);
      stream.on('close', done);
      stream.on('error', failed);
    });
  }
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
