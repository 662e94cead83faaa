import fc from 'fast-check';
import { stateLine, UNCERTAIN_FINGERPRINT, type StateRecord } from '../../shared/state/deliveredState';
import { parseStateLine, StateLine, stateLineAt } from '../../shared/state/stateLines';

const hex16 = fc.stringMatching(/^[0-9a-f]{16}$/);
const record: fc.Arbitrary<StateRecord> = fc.record(
  {
    h: hex16,
    // Keys of every kind, with quotes, backslashes, commas, brackets and non-ASCII text in them.
    k: fc.tuple(fc.constantFrom('x:', 'e:', 'a:'), fc.string({ minLength: 1, unit: 'binary' })).map(([kind, rest]) => kind + rest),
    m: fc.array(fc.string({ unit: 'binary' }), { maxLength: 4 }),
    f: fc.oneof(hex16, fc.constant(UNCERTAIN_FINGERPRINT)),
    a: fc.stringMatching(/^[0-9a-f-]{0,40}$/),
    c: fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }),
  },
  { requiredKeys: ['h', 'k', 'm', 'f'] },
);

function read(line: string): { state: StateLine | undefined; bytes: Buffer } {
  // Lines sit among others in a blob: read in place from the middle of a buffer.
  const bytes = Buffer.from(`{"h":"0000000000000000","k":"x:before","m":[],"f":"0"}\n${line}\n{"h":"ffff`, 'utf8');
  const start = bytes.indexOf(10) + 1;
  const end = bytes.indexOf(10, start);
  return { state: stateLineAt(bytes, start, end, 'state.ndjson', 2), bytes };
}

describe('state lines read in place', () => {
  it('read every line stateLine writes as the record it was, and give its text back byte for byte', () => {
    fc.assert(
      fc.property(record, (written) => {
        const line = stateLine(written);
        const { state } = read(line);
        expect(state).toBeInstanceOf(StateLine);
        const parsed = JSON.parse(line) as StateRecord;
        expect({ h: state!.h, k: state!.k, m: state!.m, f: state!.f, a: state!.a, c: state!.c }).toEqual({ a: undefined, c: undefined, ...parsed });
        expect(state!.text).toBe(line);
        expect(state!.membersText).toBe(JSON.stringify(written.m));
        expect(state!.keyedByEmail).toBe(written.k.startsWith('e:'));
        // The key without parsing the line, when it has no escapes; the same key either way.
        expect(stateLine({ ...parsed })).toBe(line);
      }),
      { numRuns: 500 },
    );
  });

  it("read nothing past a line's end, whatever the bytes after it are", () => {
    fc.assert(
      fc.property(record, (written) => {
        // The rest of the line follows each cut: a reused buffer, or a line cut short by a writer that died.
        const bytes = Buffer.from(stateLine(written), 'utf8');
        for (let end = 0; end < bytes.length; end++) if (bytes[end - 1] !== 125 /* } */) expect(stateLineAt(bytes, 0, end, 'state.ndjson', 1)).toBeUndefined();
      }),
      { numRuns: 200 },
    );
  });

  it('spell every membership list as JSON.stringify does, whatever lists were written before it', () => {
    const lists = [[], [''], ['a\u0000b'], ['a', 'b'], ['a\u0000', 'b'], ['a', '\u0000b'], ['', ''], ['a', 'b']];
    for (const m of lists) expect(stateLine({ h: '0123456789abcdef', k: 'x:1', m, f: '0' })).toContain(`"m":${JSON.stringify(m)},`);
  });

  it('leave any other layout to be parsed whole, and parse it to the same record', () => {
    const written: StateRecord = { h: '0123456789abcdef', k: 'x:42', m: ['HighValue'], f: 'fedcba9876543210', a: '1a-2b' };
    const layouts = [
      JSON.stringify({ k: written.k, h: written.h, m: written.m, f: written.f, a: written.a }),
      JSON.stringify(written, null, 1).replace(/\n/g, ''),
      `{"h":"${written.h}","k":"${written.k}","f":"${written.f}","m":["HighValue"]}`,
      `{"h":"${written.h}","k":"${written.k}","m":["HighValue"],"f":"${written.f}"} `,
    ];
    for (const line of layouts) {
      expect(read(line).state).toBeUndefined();
      expect(parseStateLine(line, 'state.ndjson', 2)).toMatchObject({ h: written.h, k: written.k, m: written.m, f: written.f });
    }
  });

  it('names the blob and line of a record that is not valid when it is asked for what it holds', () => {
    // Not taken in place: written back unread, a broken line would go on into every next state.
    for (const line of [
      '{"h":"0123456789abcdef","k":"x:42","m":["HighValue"],"f":"fedcba9876543210","a":"NOT HEX"}',
      '{"h":"0123456789abcdef","k":"x:42","m":["HighValue"],"f":"fedcba9876543210","c":{"email_subscribe":"opted_in"}',
      '{"h":"0123456789abcdef","k":"x:42","m":["HighValue"],"f":"fedcba9876543210","c":{"email_subscribe":1}}',
    ]) {
      expect(read(line).state).toBeUndefined();
      expect(() => parseStateLine(line, 'state.ndjson', 2)).toThrow();
    }
    // A field the connector does not write: parsed whole, and written anew in its own layout.
    expect(read('{"h":"0123456789abcdef","k":"x:42","m":["HighValue"],"f":"fedcba9876543210","x":1}').state).toBeUndefined();
    expect(() => parseStateLine('{"h":"0123456789abcdef","k":"x:42","m":"HighValue","f":"0"}', 'state.ndjson', 7)).toThrow(
      /state\.ndjson line 7 is not a valid record/,
    );
  });
});
