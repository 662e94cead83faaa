import { comparableHashes, exportedUserKeys, exportedValue, exportFieldsFor, staleFields } from '../../shared/reconcile/brazeView';
import { testConfig } from '../helpers/testStack';

const destination = testConfig().destinations[0];

describe("a reconcile's view of Braze's segment export", () => {
  it('keys an exported user as the matching rules key a CI row, first key first: external_id, e-mail, the alias of our label', () => {
    expect(exportedUserKeys({ external_id: 'c1', email: 'A@Example.com' }, destination)).toEqual(['x:c1', 'e:a@example.com']);
    expect(exportedUserKeys({ email: ' A@Example.com ' }, destination)).toEqual(['e:a@example.com']);
    expect(
      exportedUserKeys(
        {
          user_aliases: [
            { alias_label: 'other', alias_name: 'n' },
            { alias_label: 'ci_customer_id', alias_name: 'c9' },
          ],
        },
        destination,
      ),
    ).toEqual(['a:ci_customer_id:c9']);
    expect(exportedUserKeys({ user_aliases: [{ alias_label: 'other', alias_name: 'n' }] }, destination)).toEqual([]);
    expect(exportedUserKeys({ email: 'not an e-mail' }, destination)).toEqual([]);
    // Customer IDs that are not external IDs: an external_id Braze holds is not ours to match on.
    const byAlias = testConfig({ matching: { ...destination.matching, customerIdIsExternalId: false, fallbackIdentifiers: ['user_alias'] } }).destinations[0];
    expect(
      exportedUserKeys({ external_id: 'c1', email: 'c1@example.com', user_aliases: [{ alias_label: 'ci_customer_id', alias_name: 'c1' }] }, byAlias),
    ).toEqual(['a:ci_customer_id:c1']);
  });

  it('asks for the identifiers, the custom attributes and the standard attributes the destination maps', () => {
    expect(exportFieldsFor(destination).sort()).toEqual(['custom_attributes', 'email', 'external_id', 'first_name', 'user_aliases']);
  });

  it('compares values as Braze may write them back: times as instants, e-mails without case; a field we do not map is never stale', () => {
    const names = ['born', 'email', 'first_name', 'points'];
    const ours = comparableHashes(names, (n) => ({ born: '2026-11-28', email: 'a@example.com', first_name: 'Ann', points: 5 })[n]);
    const user = { email: 'A@example.com', first_name: 'Ann', custom_attributes: { born: '2026-11-28T00:00:00.000Z', points: 5 } };
    expect(
      staleFields(
        names,
        ours,
        comparableHashes(names, (n) => exportedValue(user, n)),
      ),
    ).toEqual([]);
    const drifted = { ...user, first_name: 'Anne', custom_attributes: { born: '2026-11-28T00:00:00.000Z' } };
    expect(
      staleFields(
        names,
        ours,
        comparableHashes(names, (n) => exportedValue(drifted, n)),
      ),
    ).toEqual(['first_name', 'points']);
    const withoutPoints = comparableHashes(names, (n) => ({ born: '2026-11-28', email: 'a@example.com', first_name: 'Ann' })[n]);
    expect(
      staleFields(
        names,
        withoutPoints,
        comparableHashes(names, (n) => exportedValue({ ...user, custom_attributes: { born: '2026-11-28', points: 9 } }, n)),
      ),
    ).toEqual([]);
  });

  it('finds a value Braze holds where CI has an empty cell stale, and a value Braze lacks where CI has one; nothing on both sides is no drift', () => {
    const names = ['first_name', 'points'];
    const emptyFirstName = comparableHashes(names, (n) => ({ first_name: null, points: 5 })[n]);
    const brazeHas = (user: Parameters<typeof exportedValue>[0]) => comparableHashes(names, (n) => exportedValue(user, n));
    // Braze's export omits an attribute the user has no value for.
    expect(staleFields(names, emptyFirstName, brazeHas({ first_name: 'Ana', custom_attributes: { points: 5 } }))).toEqual(['first_name']);
    expect(staleFields(names, emptyFirstName, brazeHas({ custom_attributes: { points: 5 } }))).toEqual([]);
    expect(staleFields(names, emptyFirstName, brazeHas({ first_name: null, custom_attributes: { points: 5 } }))).toEqual([]);
    // A user without custom attributes has no custom_attributes at all in the export.
    expect(staleFields(names, emptyFirstName, brazeHas({}))).toEqual(['points']);
    const named = comparableHashes(names, (n) => ({ first_name: 'Ana', points: 5 })[n]);
    expect(staleFields(names, named, brazeHas({ custom_attributes: { points: 5 } }))).toEqual(['first_name']);
    // A view line of a run under way across a deploy shows MISSING where Braze holds no value.
    expect(staleFields(names, emptyFirstName, `--------${brazeHas({ custom_attributes: { points: 5 } }).slice(8)}`)).toEqual([]);
    // An e-mail that is no e-mail in CI is not sent, so a reconcile does not judge it either.
    const brazeEmail = comparableHashes(['email'], (n) => exportedValue({ email: 'a@example.com' }, n));
    expect(
      staleFields(
        ['email'],
        comparableHashes(['email'], () => undefined),
        brazeEmail,
      ),
    ).toEqual([]);
    expect(
      staleFields(
        ['email'],
        comparableHashes(['email'], () => null),
        brazeEmail,
      ),
    ).toEqual(['email']);
  });
});
