import { parseSyncConfig } from '../../shared/config/syncConfig';
import { createRowMapper } from '../../shared/mapping/rowMapper';
import { canonicalGuid, canonicalKey, normalizesGuids } from '../../shared/mapping/customerId';
import { dataPointsOf, identifierFromKey, profileKeyOf, type BrazeIdentifier } from '../../shared/mapping/profileIdentity';
import type { CdmAttribute } from '../../shared/ci/modelJson';
import { canonicalColumns, mappingSeed } from '../../shared/reader/mapLines';
import { md5Hex } from '../../shared/state/profileIndex';

const attributes: CdmAttribute[] = [
  { name: 'CustomerId', dataType: 'GUID' },
  { name: 'EMail', dataType: 'string' },
  { name: 'FirstName', dataType: 'string' },
  { name: 'Points', dataType: 'int64' },
  { name: 'Vip', dataType: 'boolean' },
  { name: 'Since', dataType: 'dateTime' },
  { name: 'Prefs', dataType: 'JSON' },
];
const columns = { indexOf: new Map(attributes.map((a, i) => [a.name, i])), count: attributes.length };

function mapperFor(matching: Record<string, unknown> = {}) {
  const config = parseSyncConfig(
    JSON.stringify({
      destinations: [
        {
          name: 'D',
          segments: [{ table: 'S', brazeSegmentId: 'seg' }],
          matching: { emailColumn: 'EMail', customerIdColumn: 'CustomerId', ...matching },
          fields: { FirstName: 'first_name', Points: 'points', Vip: 'is_vip', Since: 'customer_since', Prefs: 'prefs' },
        },
      ],
    }),
    'test',
  );
  return createRowMapper(config.destinations[0], attributes, columns, { normalizeGuids: false });
}

const row = (overrides: Partial<Record<string, string>> = {}) => {
  const values: Record<string, string> = {
    CustomerId: 'c-1',
    EMail: ' Ana@Example.COM ',
    FirstName: 'Ana',
    Points: '42',
    Vip: 'true',
    Since: '2024-02-03T04:05:06Z',
    Prefs: '{"lang":"de"}',
    ...overrides,
  };
  return attributes.map((a) => values[a.name]);
};

describe('a CSV row becomes one Braze user', () => {
  it('keys by external_id, lower-cases the e-mail and types every field by its CDM dataType', () => {
    expect(mapperFor()(row())).toEqual({
      ok: true,
      profile: {
        key: 'x:c-1',
        identifier: { external_id: 'c-1' },
        fields: { email: 'ana@example.com', first_name: 'Ana', points: 42, is_vip: true, customer_since: '2024-02-03T04:05:06.000Z', prefs: { lang: 'de' } },
        fieldIssues: [],
      },
    });
  });

  it('drops and reports an invalid e-mail on a row with an external_id, and sends the rest', () => {
    const result = mapperFor()(row({ EMail: 'ana@' }));
    expect(result).toMatchObject({ ok: true, profile: { fieldIssues: ['email: invalid e-mail address, not sent'] } });
    expect(result.ok && 'email' in result.profile.fields).toBe(false);
  });

  it('keys a row without customer ID by e-mail, then by alias; rejects one with neither', () => {
    expect(mapperFor()(row({ CustomerId: '' }))).toMatchObject({ ok: true, profile: { key: 'e:ana@example.com', identifier: { email: 'ana@example.com' } } });
    expect(mapperFor({ customerIdIsExternalId: false, fallbackIdentifiers: ['user_alias'] })(row())).toMatchObject({
      ok: true,
      profile: { key: 'a:ci_customer_id:c-1', identifier: { user_alias: { alias_name: 'c-1', alias_label: 'ci_customer_id' } } },
    });
    expect(mapperFor()(row({ CustomerId: '', EMail: '' }))).toEqual({ ok: false, reason: 'no usable identifier (no customer ID, no valid e-mail)' });
    expect(mapperFor()(row({ CustomerId: '', EMail: 'nope' }))).toEqual({ ok: false, reason: 'no external_id and an invalid e-mail' });
  });

  it('reports values Braze would refuse or truncate instead of mangling them', () => {
    const result = mapperFor()(row({ FirstName: 'x'.repeat(256), Points: '12.5', Vip: 'maybe' }));
    expect(result.ok && result.profile.fieldIssues).toEqual([
      "first_name: value of 256 characters exceeds Braze's 255, not sent",
      'points: not an integer (int64), not sent',
      'is_vip: not a boolean (boolean), not sent',
    ]);
    expect(result.ok && Object.keys(result.profile.fields)).toEqual(['email', 'customer_since', 'prefs']);
    expect(mapperFor()(row({ CustomerId: 'y'.repeat(256) }))).toEqual({ ok: false, reason: 'external_id longer than 255 characters' });
  });

  it('sends an empty value as null, so Braze clears what CI no longer has', () => {
    const result = mapperFor()(row({ FirstName: '', Points: '' }));
    expect(result.ok && result.profile.fields).toMatchObject({ first_name: null, points: null });
  });
});

describe('profile identity', () => {
  it('round-trips every kind of profile key, an alias label with ":" and "%" included', () => {
    const identifiers: BrazeIdentifier[] = [
      { external_id: 'abc:def' },
      { email: 'a@b.co' },
      { user_alias: { alias_label: 'ci_customer_id', alias_name: 'x:y' } },
      { user_alias: { alias_label: 'crm:id%2', alias_name: 'n:1' } },
    ];
    for (const identifier of identifiers) expect(identifierFromKey(profileKeyOf(identifier))).toEqual(identifier);
    // Labels without ":" or "%" keep the key the delivered state already holds.
    expect(profileKeyOf({ user_alias: { alias_label: 'ci_customer_id', alias_name: 'x' } })).toBe('a:ci_customer_id:x');
  });
  it('counts a data point per attribute written, the identifier never', () => {
    expect(dataPointsOf({ first_name: 'A', email: 'a@b.co', ci_seg: null })).toBe(3);
    expect(dataPointsOf({})).toBe(0);
  });
});

describe('the mapping seed of unchanged-row detection', () => {
  const destination = (extra: Record<string, unknown> = {}) =>
    parseSyncConfig(
      JSON.stringify({
        destinations: [
          { name: 'D', segments: [{ table: 'S', brazeSegmentId: 'seg' }], matching: { customerIdColumn: 'CustomerId' }, fields: { Phone: 'phone' }, ...extra },
        ],
      }),
      'test',
    ).destinations[0];
  const segment = { table: 'S', attribute: 'seg', brazeSegmentId: 'seg', partitions: [], attributes: [{ name: 'Phone', dataType: 'string' as const }] };

  it('stays what it was for a destination without phoneCountry, and changes when one is set, so its phones are sent again', () => {
    const plain = destination();
    const types = canonicalColumns(plain).map((c) => segment.attributes.find((a) => a.name === c)?.dataType ?? 'string');
    expect(mappingSeed(plain, segment)).toBe(md5Hex(JSON.stringify([plain.matching, plain.fields, types])).slice(0, 16));
    expect(mappingSeed(destination({ phoneCountry: 'DE' }), segment)).not.toBe(mappingSeed(plain, segment));
  });
});

describe('GUID customer IDs in one spelling', () => {
  it("reads .NET's GUID text forms and leaves anything else as written", () => {
    const canonical = '0b5e3dd6-1c2d-4e5f-8a9b-00000000002a';
    for (const written of [
      canonical,
      canonical.toUpperCase(),
      `{${canonical.toUpperCase()}}`,
      `(${canonical})`,
      canonical.replace(/-/g, ''),
      `{${canonical.replace(/-/g, '')}}`,
    ])
      expect(canonicalGuid(written)).toBe(canonical);
    for (const other of ['c-1', `{${canonical}`, `${canonical}}`, `{${canonical})`, `${canonical}0`, 'g'.repeat(32), ''])
      expect(canonicalGuid(other)).toBeUndefined();
  });

  it('is on for a GUID customer-ID column unless the destination says otherwise, and maps the key and external_id', () => {
    const guidColumn = [{ attributes: [{ name: 'CustomerId', dataType: 'GUID' as const }] }];
    const stringColumn = [{ attributes: [{ name: 'CustomerId', dataType: 'string' as const }] }];
    const destination = (normalizeGuids?: boolean) =>
      parseSyncConfig(
        JSON.stringify({
          destinations: [
            {
              name: 'D',
              segments: [{ table: 'S', brazeSegmentId: 'seg' }],
              matching: { emailColumn: 'EMail', customerIdColumn: 'CustomerId', normalizeGuids },
            },
          ],
        }),
        'test',
      ).destinations[0];
    expect(normalizesGuids(destination(), guidColumn)).toBe(true);
    expect(normalizesGuids(destination(), stringColumn)).toBe(false);
    expect(normalizesGuids(destination(false), guidColumn)).toBe(false);
    expect(normalizesGuids(destination(true), stringColumn)).toBe(true);
    expect(canonicalKey('x:{0B5E3DD6-1C2D-4E5F-8A9B-00000000002A}')).toBe('x:0b5e3dd6-1c2d-4e5f-8a9b-00000000002a');
    expect(canonicalKey('x:0b5e3dd6-1c2d-4e5f-8a9b-00000000002a')).toBeUndefined();
    expect(canonicalKey('e:{0B5E3DD6-1C2D-4E5F-8A9B-00000000002A}')).toBeUndefined();

    const columns = {
      indexOf: new Map([
        ['CustomerId', 0],
        ['EMail', 1],
      ]),
      count: 2,
    };
    const mapped = createRowMapper(destination(), [{ name: 'CustomerId', dataType: 'GUID' }], columns, { normalizeGuids: true })([
      '{0B5E3DD6-1C2D-4E5F-8A9B-00000000002A}',
      'a@x.io',
    ]);
    expect(mapped).toMatchObject({
      ok: true,
      profile: { key: 'x:0b5e3dd6-1c2d-4e5f-8a9b-00000000002a', identifier: { external_id: '0b5e3dd6-1c2d-4e5f-8a9b-00000000002a' } },
    });
  });
});
