import { mapLineFingerprint, mapLineHash, mapLineText, parseMapLine, readMapLineHash, readMapLineHead } from '../../shared/reader/mapLines';

// A map output as map steps write it: lines joined by '\n', read by a diff step from its bytes.
function output(...lines: string[]): Buffer {
  return Buffer.from(lines.join('\n') + '\n', 'utf8');
}

function lineSpans(buf: Buffer): [number, number][] {
  const spans: [number, number][] = [];
  for (let start = 0; start < buf.length;) {
    const end = buf.indexOf(10, start);
    spans.push([start, end]);
    start = end + 1;
  }
  return spans;
}

describe('map line heads read from the bytes', () => {
  it('are what parsing the line gives, for every line, non-ASCII values included', () => {
    const lines = [
      mapLineText('0123456789abcdef', 0, 3, 1, 2, 'fedcba9876543210', JSON.stringify(['Zoë', 'zoë@example.com'])),
      mapLineText('1111111111111111', 12, 0, 123456, 0, '2222222222222222', JSON.stringify(['"quoted", with \\ slashes', null])),
      mapLineText('aaaaaaaaaaaaaaaa', 1, 10, 7, 99999, 'bbbbbbbbbbbbbbbb', '[]'),
    ];
    const buf = output(...lines);
    lineSpans(buf).forEach(([start, end], i) => {
      const parsed = parseMapLine(lines[i], 'test');
      expect(readMapLineHash(buf, start, 'test')).toBe(parsed.h);
      expect(readMapLineHead(buf, start, end, 'test')).toEqual({ p: parsed.p, r: parsed.r, l: parsed.l, x: parsed.x });
      expect(mapLineHash(lines[i], 'test')).toBe(parsed.h);
      expect(mapLineFingerprint(lines[i], 'test')).toBe(parsed.x);
      expect(buf.toString('utf8', start, end)).toBe(lines[i]);
    });
  });

  it('read a line without its physical line number as line 0', () => {
    const line = '{"h":"0123456789abcdef","g":0,"p":2,"r":5,"x":"fedcba9876543210","v":["a"]}';
    const buf = output(line);
    expect(readMapLineHash(buf, 0, 'test')).toBe('0123456789abcdef');
    expect(readMapLineHead(buf, 0, buf.length - 1, 'test')).toEqual({ p: 2, r: 5, l: 0, x: 'fedcba9876543210' });
  });

  it.each([
    ['an identity hint', '{"e":"0123456789abcdef","g":0,"i":"c-1"}'],
    ['a short hash', '{"h":"0123456789abcde","g":0,"p":2,"r":5,"l":1,"x":"fedcba9876543210","v":[]}'],
    ['keys out of order', '{"h":"0123456789abcdef","p":2,"g":0,"r":5,"l":1,"x":"fedcba9876543210","v":[]}'],
    ['a row that is not a number', '{"h":"0123456789abcdef","g":0,"p":2,"r":"5","l":1,"x":"fedcba9876543210","v":[]}'],
    ['a short fingerprint', '{"h":"0123456789abcdef","g":0,"p":2,"r":5,"l":1,"x":"fedcba987654321","v":[]}'],
    ['a line cut short', '{"h":"0123456789abcdef","g":0,"p":2,"r":5,"l":1,"x":"fedc'],
  ])('refuse %s, naming where it was', (_what, line) => {
    const buf = output(line);
    // As a diff step reads a profile's first line: its hash, then its head.
    expect(() => {
      readMapLineHash(buf, 0, 'map output m-0');
      readMapLineHead(buf, 0, buf.length - 1, 'map output m-0');
    }).toThrow('map output m-0: not a map line');
  });
});
