import { rejectsReportName } from '../../shared/runs/runBlobs';
import { normalizeStandardAttribute, withoutInnerNulls } from '../../shared/mapping/standardAttributes';
import { subscriptionReader } from '../../shared/mapping/subscriptions';
import { requestSync } from '../../shared/sync/startSync';
import { BrazeServer } from '../../local/brazeServer';
import { csv, writeExport, type ExportColumn } from '../helpers/exportBuilder';
import { startTestStack, TEST_API_KEY, testConfig, type TestStack } from '../helpers/testStack';
import { waitFor } from '../helpers/expectations';

/**
 * Braze's documented rules for user profile fields (braze-docs _docs/_api/objects_filters/
 * user_attributes_object.md, _docs/_api/endpoints/user_data/post_user_track.md), played by the
 * local Braze server and kept by the connector before it sends.
 */
describe("Braze's profile fields, made valid before they are sent", () => {
  it('normalises what can be made valid and refuses the rest with a reason', () => {
    const n = normalizeStandardAttribute;
    // country: ISO-3166-1 alpha-2 ("We require that country codes be passed to Braze in the ISO-3166-1 alpha-2 standard").
    expect(['Germany', 'DE', 'de', 'DEU', 'United States of America', 'USA'].map((v) => n('country', v))).toEqual(
      ['DE', 'DE', 'DE', 'DE', 'US', 'US'].map((value) => ({ ok: true, value })),
    );
    expect(n('country', 'Atlantis')).toMatchObject({ ok: false });
    // phone: E.164, read in the destination's country when it has no country code.
    expect(n('phone', '+1 (504) 327-7269')).toEqual({ ok: true, value: '+15043277269' });
    expect(n('phone', '030 1234567', { phoneCountry: 'DE' })).toEqual({ ok: true, value: '+49301234567' });
    expect(n('phone', '030 1234567')).toMatchObject({ ok: false, reason: expect.stringContaining('phoneCountry') });
    expect(n('phone', '12')).toMatchObject({ ok: false });
    // dob: "String in format YYYY-MM-DD".
    expect(n('dob', '05/18/1980')).toEqual({ ok: true, value: '1980-05-18' });
    expect(n('dob', '1980-02-30')).toMatchObject({ ok: false });
    // gender: "M", "F", "O", "N", "P".
    expect(['female', 'M', 'Prefer not to say'].map((v) => n('gender', v))).toEqual(['F', 'M', 'P'].map((value) => ({ ok: true, value })));
    expect(n('gender', 'x')).toMatchObject({ ok: false });
    // language: ISO-639-1.
    expect(['en', 'pt-BR', 'DE'].map((v) => n('language', v))).toEqual(['en', 'pt', 'de'].map((value) => ({ ok: true, value })));
    expect(n('language', 'xx')).toMatchObject({ ok: false });
    // Braze's list has 3-letter codes too, deprecated codes are current (iw → he), Norwegian is nb.
    expect(['fil', 'iw', 'no'].map((v) => n('language', v))).toEqual(['fil', 'he', 'nb'].map((value) => ({ ok: true, value })));
    // time_zone: an IANA name ("Only valid time zone values will be set").
    expect(n('time_zone', 'America/New_York')).toEqual({ ok: true, value: 'America/New_York' });
    // As written, never the platform's older alias (Asia/Calcutta), and the documented "Eastern Time (US & Canada)" form.
    expect(['Asia/Kolkata', 'Europe/Kyiv', 'Eastern Time (US & Canada)'].map((v) => n('time_zone', v))).toEqual(
      ['Asia/Kolkata', 'Europe/Kyiv', 'Eastern Time (US & Canada)'].map((value) => ({ ok: true, value })),
    );
    expect(n('time_zone', 'Mars/Olympus')).toMatchObject({ ok: false });
    // email_subscribe / push_subscribe: "opted_in", "unsubscribed", "subscribed"; a subscription group's
    // subscription_state: "subscribed", "unsubscribed". A column mapped under fields takes Braze's names only.
    const strict = subscriptionReader('channel', {});
    expect(strict('Opted In')).toEqual({ ok: true, state: 'opted_in' });
    expect(strict('yes')).toMatchObject({ ok: false });
    expect(strict('')).toEqual({ ok: true, state: undefined });
    const group = subscriptionReader('group', undefined);
    expect([true, 'Yes', 'opted-in', false, 'Opted Out', 'subscribed'].map((v) => group(v))).toEqual(
      ['subscribed', 'subscribed', 'subscribed', 'unsubscribed', 'unsubscribed', 'subscribed'].map((state) => ({ ok: true, state })),
    );
    expect(subscriptionReader('channel', undefined)('Yes')).toEqual({ ok: true, state: 'opted_in' });
    expect(subscriptionReader('channel', { J: 'opted_in', N: 'unsubscribed' })('yes')).toMatchObject({ ok: false, reason: expect.stringContaining('"J"') });
    // An empty cell clears the field.
    expect(n('country', null)).toEqual({ ok: true, value: null });
    // A nested attribute keeps everything but its nulls.
    expect(withoutInnerNulls({ a: 1, b: null, c: [1, null, { d: null, e: 'x' }] })).toEqual({ a: 1, c: [1, { e: 'x' }] });
  });
});

describe('the local Braze server plays the documented rules', () => {
  let braze: BrazeServer;
  let url: string;
  beforeEach(async () => {
    braze = new BrazeServer({ apiKey: TEST_API_KEY });
    url = await braze.start();
  });
  afterEach(async () => {
    await braze.stop();
  });
  const track = async (attributes: unknown[]) => {
    const answer = await fetch(`${url}/users/track`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TEST_API_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ attributes }),
    });
    return { status: answer.status, body: (await answer.json()) as { errors?: unknown[] } };
  };

  it('stores a country that is not alpha-2 as NULL, sets only valid time zones, and takes phone as a field beside an external_id', async () => {
    await track([{ external_id: 'a', country: 'DE', time_zone: 'Europe/Berlin', phone: '+49301234567' }]);
    expect(braze.profile('external_id:a')).toEqual({ country: 'DE', time_zone: 'Europe/Berlin', phone: '+49301234567' });
    const answer = await track([{ external_id: 'a', country: 'Germany', time_zone: 'Mars/Olympus' }]);
    expect(answer.body.errors).toBeUndefined();
    expect(braze.profile('external_id:a')).toEqual({ time_zone: 'Europe/Berlin', phone: '+49301234567' });
  });

  it('drops every nested custom attribute update of a request when one holds a null', async () => {
    await track([
      { external_id: 'a', prefs: { colour: 'red', size: null }, plain: 1 },
      { external_id: 'b', prefs: { colour: 'blue' } },
    ]);
    expect(braze.profile('external_id:a')).toEqual({ plain: 1 });
    expect(braze.profile('external_id:b')).toEqual({});
    await track([{ external_id: 'b', prefs: { colour: 'blue' } }]);
    expect(braze.profile('external_id:b')).toEqual({ prefs: { colour: 'blue' } });
  });

  it('deletes users as post_user_delete.md says: 50 a request, e-mails with a prioritization, renamed IDs found, unknown ones no error', async () => {
    const remove = async (body: unknown) => {
      const answer = await fetch(`${url}/users/delete`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${TEST_API_KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: answer.status, body: (await answer.json()) as { deleted?: number; message?: string } };
    };
    await track([
      { external_id: 'a', first_name: 'A' },
      { user_alias: { alias_name: 'n', alias_label: 'l' }, _update_existing_only: false, first_name: 'N' },
      { email: 'e@x.io', _update_existing_only: false, first_name: 'E' },
      { external_id: 'b', email: 'e@x.io' },
    ]);
    expect(await remove({ external_ids: ['a', 'nobody'] })).toEqual({ status: 202, body: { deleted: 1, message: 'success' } });
    expect((await remove({ user_aliases: [{ alias_name: 'n', alias_label: 'l' }] })).body.deleted).toBe(1);
    // An e-mail needs a prioritization; "unidentified" picks the profile without an external_id.
    expect((await remove({ email_addresses: [{ email: 'e@x.io' }] })).status).toBe(400);
    expect((await remove({ email_addresses: [{ email: 'e@x.io', prioritization: ['unidentified', 'most_recently_updated'] }] })).body.deleted).toBe(1);
    expect(braze.profile('external_id:b')).toEqual({ email: 'e@x.io' });
    expect([...braze.profiles.keys()]).toEqual(['external_id:b']);
    expect((await remove({ external_ids: Array.from({ length: 51 }, (_, i) => `x${i}`) })).status).toBe(400);
  });

  const identify = async (body: unknown) => {
    const answer = await fetch(`${url}/users/identify`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TEST_API_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: answer.status, body: (await answer.json()) as { aliases_processed?: number; errors?: unknown[] } };
  };

  it('updates by e-mail the profile that holds the address, the most recently updated identified one first', async () => {
    // post_user_track.md, "What happens when multiple profiles with the same email address are found?"
    await track([{ email: 'a@x.io', _update_existing_only: false, ci: true }]);
    await track([{ external_id: 'a', email: 'a@x.io', ci: true }]);
    await track([{ external_id: 'b', email: 'a@x.io', ci: true }]);
    await track([{ external_id: 'a', first_name: 'A' }]);
    await track([{ email: 'a@x.io', ci: null }]);
    // The clear landed on external_id a (identified, most recently updated); b and the e-mail-only profile keep theirs.
    expect(braze.profile('external_id:a')).toEqual({ email: 'a@x.io', first_name: 'A' });
    expect(braze.profile('external_id:b')).toEqual({ email: 'a@x.io', ci: true });
    expect(braze.profile('email:a@x.io')).toEqual({ email: 'a@x.io', ci: true });
    // "If no profile with the email address currently exists": a new e-mail-only profile.
    await track([{ email: 'new@x.io', _update_existing_only: false, ci: true }]);
    expect(braze.profile('email:new@x.io')).toEqual({ email: 'new@x.io', ci: true });
  });

  it('renames an external_id and keeps the old one as a deprecated ID that still finds the user', async () => {
    // post_external_ids_rename.md: current must be primary, new not in use, the two different; errors per index.
    const rename = async (renames: unknown[]) => {
      const answer = await fetch(`${url}/users/external_ids/rename`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${TEST_API_KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ external_id_renames: renames }),
      });
      return (await answer.json()) as { external_ids: string[]; rename_errors: unknown[] };
    };
    await track([
      { external_id: 'OLD', ci: true },
      { external_id: 'taken', ci: true },
    ]);
    const answer = await rename([
      { current_external_id: 'OLD', new_external_id: 'new' },
      { current_external_id: 'taken', new_external_id: 'new' },
      { current_external_id: 'missing', new_external_id: 'other' },
    ]);
    expect(answer.external_ids).toEqual(['new']);
    expect(answer.rename_errors).toHaveLength(2);
    expect(braze.profile('external_id:new')).toEqual({ ci: true });
    expect(braze.profile('external_id:OLD')).toBeUndefined();
    await track([{ external_id: 'OLD', first_name: 'Ana' }]);
    expect(braze.profile('external_id:new')).toEqual({ ci: true, first_name: 'Ana' });
    // A deprecated ID is no primary one: it cannot be renamed again.
    expect((await rename([{ current_external_id: 'OLD', new_external_id: 'newer' }])).external_ids).toEqual([]);
  });

  it('identifies an e-mail-only profile: merged into the identified one, or given the external_id when there is none', async () => {
    // post_user_identify.md: emails_to_identify with a prioritization; fields found only on the e-mail-only profile are merged.
    await track([{ email: 'a@x.io', _update_existing_only: false, ci: true, old: 1 }]);
    await track([{ external_id: 'a', email: 'a@x.io', ci: false, first_name: 'A' }]);
    const merged = await identify({ emails_to_identify: [{ external_id: 'a', email: 'a@x.io', prioritization: ['unidentified', 'most_recently_updated'] }] });
    expect(merged).toEqual({ status: 201, body: { aliases_processed: 1, message: 'success' } });
    expect(braze.profile('email:a@x.io')).toBeUndefined();
    expect(braze.profile('external_id:a')).toEqual({ email: 'a@x.io', ci: false, first_name: 'A', old: 1 });

    await track([{ email: 'b@x.io', _update_existing_only: false, ci: true }]);
    await identify({ emails_to_identify: [{ external_id: 'b', email: 'b@x.io', prioritization: ['unidentified', 'most_recently_updated'] }] });
    expect(braze.profile('external_id:b')).toEqual({ email: 'b@x.io', ci: true });
    expect(braze.profiles.size).toBe(2);

    // Nothing unidentified holds the address: an error for that entry, nothing merged; a prioritization is required.
    const none = await identify({ emails_to_identify: [{ external_id: 'b', email: 'b@x.io', prioritization: ['unidentified'] }] });
    expect(none.body).toMatchObject({ aliases_processed: 0, errors: [{ input_array: 'emails_to_identify', index: 0 }] });
    const unordered = await identify({ emails_to_identify: [{ external_id: 'b', email: 'b@x.io' }] });
    expect(unordered.body.errors).toHaveLength(1);
    expect(braze.profiles.size).toBe(2);
  });
});

describe('a sync of profile fields, end to end', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('lands valid values in Braze, drops what cannot be made valid with a reason, and keeps nested attributes from a null inside one', async () => {
    const columns: ExportColumn[] = [
      { name: 'CustomerId', dataType: 'GUID' },
      { name: 'EMail', dataType: 'string' },
      { name: 'Country', dataType: 'string' },
      { name: 'Phone', dataType: 'string' },
      { name: 'BirthDate', dataType: 'date' },
      { name: 'Gender', dataType: 'string' },
      { name: 'Preferences', dataType: 'JSON' },
    ];
    const config = testConfig({
      fields: { Country: 'country', Phone: 'phone', BirthDate: 'dob', Gender: 'gender', Preferences: 'prefs' },
      phoneCountry: 'DE',
    });
    stack = await startTestStack({ config, env: { SYNC_CONFIG: JSON.stringify(config) } });
    const id = (n: number) => `00000000-0000-4000-8000-00000000000${n}`;
    const rows = [
      [id(1), 'a@example.com', 'Germany', '030 1234567', '1980-05-18', 'female', '{"colour":"red","size":null}'],
      [id(2), 'b@example.com', 'USA', '+1 504 327 7269', '05/19/1981', 'M', '{"colour":"blue"}'],
      [id(3), 'c@example.com', 'Atlantis', '12', '1982-02-30', 'x', '{"colour":"green"}'],
    ];
    await writeExport(stack.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      columns,
      segments: [
        { table: 'HighValue', partitions: [csv(rows)] },
        { table: 'Newsletter', partitions: [csv([])] },
      ],
    });
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    expect(outcome.problems).toEqual([]);
    const runId = outcome.runs[0].runId;
    await waitFor(async () => (await stack!.app.deps.runs.get(runId))?.status === 'completed', 60_000);
    expect(await stack.app.deps.runs.get(runId)).toMatchObject({ usersDelivered: 3, usersFailed: 0 });

    expect(stack.braze.profile(`external_id:${id(1)}`)).toMatchObject({
      country: 'DE',
      phone: '+49301234567',
      dob: '1980-05-18',
      gender: 'F',
      prefs: { colour: 'red' },
    });
    expect(stack.braze.profile(`external_id:${id(2)}`)).toMatchObject({
      country: 'US',
      phone: '+15043277269',
      dob: '1981-05-19',
      gender: 'M',
      prefs: { colour: 'blue' },
    });
    const third = stack.braze.profile(`external_id:${id(3)}`)!;
    expect(third).toMatchObject({ ci_high_value: true, prefs: { colour: 'green' } });
    for (const field of ['country', 'phone', 'dob', 'gender']) expect(third[field]).toBeUndefined();

    const report = (await stack.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(runId)).downloadToBuffer()).toString('utf8');
    for (const field of ['country', 'phone', 'dob', 'gender']) expect(report).toMatch(new RegExp(`field_dropped,[^\\n]*,"?${field}: `));
    // Reasons never carry the value.
    expect(report).not.toMatch(/Atlantis|1982-02-30/);
  });
});
