import { HttpRequest, InvocationContext } from '@azure/functions';
import { reconcileHttp } from '../../functions/reconcileHttp';
import { runPreview } from '../../functions/runPreview';
import { parseSyncConfig } from '../../shared/config/syncConfig';
import { rejectsReportName } from '../../shared/runs/runBlobs';
import type { RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { csv, writeExport, type ExportColumn } from '../helpers/exportBuilder';
import { expectExactCounts } from '../helpers/expectations';
import { stacksOnSharedAzurite, testConfig, type TestStack } from '../helpers/testStack';

/**
 * Subscription state from consent columns, as Braze documents it (braze-docs
 * _docs/_api/objects_filters/user_attributes_object.md: email_subscribe / push_subscribe take
 * "opted_in", "unsubscribed", "subscribed"; subscription_groups holds {subscription_group_id,
 * subscription_state} with "subscribed" or "unsubscribed") and bills it (_docs/_user_guide/data/
 * data_points.md: "Subscription state changes globally and around subscription groups" log no data
 * point).
 */
const GROUP = '6b1c2e4a-9f0d-4c3b-8a7e-1d2c3b4a5f60';
const COLUMNS: ExportColumn[] = [
  { name: 'CustomerId', dataType: 'GUID' },
  { name: 'EMail', dataType: 'string' },
  { name: 'FirstName', dataType: 'string' },
  { name: 'LoyaltyPoints', dataType: 'int64' },
  { name: 'EmailConsent', dataType: 'string' },
  { name: 'PushOptIn', dataType: 'boolean' },
  { name: 'Newsletter', dataType: 'string' },
];
const ID = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const config = testConfig({
  segments: [{ table: 'HighValue', brazeSegmentId: 'seg-high-value', attribute: 'ci_high_value' }],
  subscriptions: [
    { column: 'EmailConsent', channel: 'email', values: { 'Opted in': 'opted_in', 'Opted out': 'unsubscribed', 'Not set': 'subscribed' } },
    { column: 'PushOptIn', channel: 'push' },
    { column: 'Newsletter', subscriptionGroupId: GROUP },
  ],
});
const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });

type Row = [id: number, consent: string, push: string, newsletter: string, points?: number];
const rowsOf = (rows: Row[]) =>
  csv(rows.map(([n, consent, push, newsletter, points]) => [ID(n), `p${n}@example.com`, `P${n}`, String(points ?? n), consent, push, newsletter]));

async function refresh(stack: TestStack, rows: Row[], folder: string, dryRun = false): Promise<RunRecord> {
  await writeExport(stack.app.deps.storage.exportContainer, {
    destination: 'BrazeExport',
    columns: COLUMNS,
    segments: [{ table: 'HighValue', partitions: [rowsOf(rows)], runFolder: folder }],
  });
  const outcome = await requestSync(stack.app.deps, { trigger: 'http', dryRun });
  expect(outcome.problems).toEqual([]);
  const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
  expect({ status: run.status, error: run.error }).toEqual({ status: 'completed', error: undefined });
  if (!dryRun) expectExactCounts(run);
  return run;
}

describe('subscription state from consent columns', () => {
  const stacks = stacksOnSharedAzurite();

  it('sends channel and group states from what CI holds, free of data points, and never re-sends one CI did not change', async () => {
    const stack = await stacks.start({ config, braze: { keepObjects: true } });
    const first: Row[] = [
      [1, 'Opted in', 'true', 'Yes'],
      [2, 'opted OUT', 'false', 'no'],
      [3, 'Not set', '', ''],
      [4, 'maybe', 'yes', 'granted'],
      [5, '', 'sometimes', 'withdrawn'],
    ];
    const run1 = await refresh(stack, first, '2026/11/28/0600');
    const braze = stack.braze;
    const group = (state: string) => [{ subscription_group_id: GROUP, subscription_state: state }];
    expect(braze.profile(`external_id:${ID(1)}`)).toMatchObject({
      email_subscribe: 'opted_in',
      push_subscribe: 'opted_in',
      subscription_groups: group('subscribed'),
    });
    expect(braze.profile(`external_id:${ID(2)}`)).toMatchObject({
      email_subscribe: 'unsubscribed',
      push_subscribe: 'unsubscribed',
      subscription_groups: group('unsubscribed'),
    });
    // An empty cell says nothing: no state is sent.
    const third = braze.profile(`external_id:${ID(3)}`)!;
    expect(third.email_subscribe).toBe('subscribed');
    expect('push_subscribe' in third || 'subscription_groups' in third).toBe(false);
    // A value the mapping does not know is dropped with the reason (never the value); the row still goes.
    const fourth = braze.profile(`external_id:${ID(4)}`)!;
    expect('email_subscribe' in fourth).toBe(false);
    expect(fourth).toMatchObject({ push_subscribe: 'opted_in', subscription_groups: group('subscribed'), first_name: 'P4' });
    const fifth = braze.profile(`external_id:${ID(5)}`)!;
    expect('push_subscribe' in fifth).toBe(false);
    expect(fifth.subscription_groups).toEqual(group('unsubscribed'));
    const report = (await stack.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(run1.runId)).downloadToBuffer()).toString('utf8');
    expect(report).toMatch(
      /field_dropped,[^\n]*external_id 00000000-0000-4000-8000-000000000004,"?email_subscribe: not a subscription value this mapping knows/,
    );
    expect(report).toMatch(/field_dropped,[^\n]*external_id 00000000-0000-4000-8000-000000000005,"?push_subscribe: not a boolean \(boolean\), not sent/);
    expect(report).not.toMatch(/maybe|sometimes/);
    // email, first_name, loyalty_points and the membership: four data points a profile; the states none.
    expect(run1.dataPointsSent).toBe(5 * 4);
    expect(run1.dataPointsFullSend).toBe(5 * 4);

    // Profile 1 unsubscribes in Braze (an e-mail's footer link). Its points change in CI, its consent
    // does not: the change goes, the stale "Opted in" does not. Profile 2 opts in in CI: that goes.
    braze.profile(`external_id:${ID(1)}`)!.email_subscribe = 'unsubscribed';
    const second: Row[] = [[1, 'Opted in', 'true', 'Yes', 100], [2, 'Opted in', 'false', 'no'], ...first.slice(2)];
    const dry = await refresh(stack, second, '2026/11/29/0600', true);
    const answer = await runPreview(
      new HttpRequest({ url: `http://localhost/api/runs/${dry.runId}/preview`, method: 'GET', params: { id: dry.runId } }),
      context(),
    );
    const preview = answer.jsonBody as { attributes: Record<string, number>; dataPoints: number; profiles: { wouldSend: number } };
    expect(preview.profiles.wouldSend).toBe(2);
    expect(preview.attributes).toEqual({ loyalty_points: 1, email_subscribe: 1 });
    // Profile 1 in full but its unchanged state (email, first_name, loyalty_points), profile 2 in full but its unchanged fields' states.
    expect(preview.dataPoints).toBe(3 + 3);

    braze.appliedObjects.length = 0;
    const run2 = await refresh(stack, second, '2026/11/29/0600');
    expect(run2.usersEnqueued).toBe(2);
    expect(run2.dataPointsSent).toBe(preview.dataPoints);
    const sent = new Map(braze.appliedObjects.map((o) => [o.external_id, o]));
    expect(sent.get(ID(1))).toMatchObject({ loyalty_points: 100 });
    expect(Object.keys(sent.get(ID(1))!).filter((k) => k.endsWith('subscribe') || k === 'subscription_groups')).toEqual([]);
    expect(sent.get(ID(2))).toMatchObject({ email_subscribe: 'opted_in' });
    expect('push_subscribe' in sent.get(ID(2))! || 'subscription_groups' in sent.get(ID(2))!).toBe(false);
    expect(braze.profile(`external_id:${ID(1)}`)).toMatchObject({ email_subscribe: 'unsubscribed', loyalty_points: 100 });
    expect(braze.profile(`external_id:${ID(2)}`)).toMatchObject({ email_subscribe: 'opted_in', push_subscribe: 'unsubscribed' });
  }, 120_000);

  it('a reconcile repairs fields but never puts back a subscription state Braze holds otherwise', async () => {
    const stack = await stacks.start({
      config,
      braze: { segments: { 'seg-high-value': 'ci_high_value' }, exportDelayMs: 200, keepObjects: true },
      env: { RECONCILE_POLL_SECONDS: '1' },
    });
    await refresh(
      stack,
      [
        [1, 'Opted in', 'true', 'Yes'],
        [2, 'Opted in', 'true', 'Yes'],
      ],
      '2026/11/28/0600',
    );
    const braze = stack.braze;
    // In Braze: profile 1 unsubscribed everywhere, profile 2's name edited by hand.
    Object.assign(braze.profile(`external_id:${ID(1)}`)!, { email_subscribe: 'unsubscribed', push_subscribe: 'unsubscribed' });
    braze.profile(`external_id:${ID(1)}`)!.subscription_groups = [{ subscription_group_id: GROUP, subscription_state: 'unsubscribed' }];
    braze.profile(`external_id:${ID(2)}`)!.first_name = 'Edited';
    braze.appliedObjects.length = 0;
    const answer = await reconcileHttp(
      new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify({ destination: 'BrazeExport' }) } }),
      context(),
    );
    expect(answer.status).toBe(202);
    const [run] = await stack.app.waitForRuns([(answer.jsonBody as { runId: string }).runId], { timeoutMs: 60_000 });
    expect(run.status).toBe('completed');
    expect(braze.appliedObjects).toEqual([{ external_id: ID(2), first_name: 'P2' }]);
    expect(braze.profile(`external_id:${ID(1)}`)).toMatchObject({
      email_subscribe: 'unsubscribed',
      push_subscribe: 'unsubscribed',
      subscription_groups: [{ subscription_group_id: GROUP, subscription_state: 'unsubscribed' }],
    });
  }, 120_000);

  it('sends only the group whose state changed, never re-sends states when the mapping gains a field, and a reconcile passes a consent change on', async () => {
    const OTHER = '0f4b2a1c-3d5e-4f60-8a9b-7c6d5e4f3a2b';
    const twoGroups = testConfig({
      segments: [{ table: 'HighValue', brazeSegmentId: 'seg-high-value', attribute: 'ci_high_value' }],
      subscriptions: [
        { column: 'Newsletter', subscriptionGroupId: GROUP },
        { column: 'PushOptIn', subscriptionGroupId: OTHER },
      ],
    });
    const stack = await stacks.start({
      config: twoGroups,
      braze: { keepObjects: true, segments: { 'seg-high-value': 'ci_high_value' }, exportDelayMs: 200 },
      env: { RECONCILE_POLL_SECONDS: '1' },
    });
    const braze = stack.braze;
    const states = (n: number) => braze.profile(`external_id:${ID(n)}`)!.subscription_groups;
    await refresh(
      stack,
      [
        [1, '', 'true', 'Yes'],
        [2, '', 'true', 'Yes'],
      ],
      '2026/11/28/0600',
    );
    expect(states(1)).toEqual([
      { subscription_group_id: OTHER, subscription_state: 'subscribed' },
      { subscription_group_id: GROUP, subscription_state: 'subscribed' },
    ]);
    // Profile 1 leaves the other group in Braze; in CI, it leaves the newsletter.
    braze.profile(`external_id:${ID(1)}`)!.subscription_groups = [
      { subscription_group_id: OTHER, subscription_state: 'unsubscribed' },
      { subscription_group_id: GROUP, subscription_state: 'subscribed' },
    ];
    braze.appliedObjects.length = 0;
    await refresh(
      stack,
      [
        [1, '', 'true', 'No'],
        [2, '', 'true', 'Yes'],
      ],
      '2026/11/29/0600',
    );
    expect(braze.appliedObjects.map((o) => o.subscription_groups)).toEqual([[{ subscription_group_id: GROUP, subscription_state: 'unsubscribed' }]]);
    expect(states(1)).toEqual([
      { subscription_group_id: OTHER, subscription_state: 'unsubscribed' },
      { subscription_group_id: GROUP, subscription_state: 'unsubscribed' },
    ]);

    // The mapping gains a field: every profile goes once in full, its states not (CI did not change them).
    stack.app.deps.config.destinations[0].fields = { ...stack.app.deps.config.destinations[0].fields, EmailConsent: 'consent_text' };
    braze.appliedObjects.length = 0;
    const wider = await refresh(
      stack,
      [
        [1, '', 'true', 'No'],
        [2, '', 'true', 'Yes'],
      ],
      '2026/11/30/0600',
    );
    expect(wider.usersEnqueued).toBe(2);
    expect(braze.appliedObjects.filter((o) => 'subscription_groups' in o)).toEqual([]);
    expect(states(1)).toContainEqual({ subscription_group_id: OTHER, subscription_state: 'unsubscribed' });

    // CI changes profile 2's newsletter consent, and a reconcile reads that refresh first: it passes the
    // change on (as a sync would), and the sync after it has nothing left to send.
    await writeExport(stack.app.deps.storage.exportContainer, {
      destination: 'BrazeExport',
      columns: COLUMNS,
      segments: [
        {
          table: 'HighValue',
          partitions: [
            rowsOf([
              [1, '', 'true', 'No'],
              [2, '', 'true', 'No'],
            ]),
          ],
          runFolder: '2026/12/01/0600',
        },
      ],
    });
    braze.appliedObjects.length = 0;
    const answer = await reconcileHttp(
      new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify({ destination: 'BrazeExport' }) } }),
      context(),
    );
    const [reconciled] = await stack.app.waitForRuns([(answer.jsonBody as { runId: string }).runId], { timeoutMs: 60_000 });
    expect(reconciled.status).toBe('completed');
    expect(braze.appliedObjects).toEqual([{ external_id: ID(2), subscription_groups: [{ subscription_group_id: GROUP, subscription_state: 'unsubscribed' }] }]);
    const after = await refresh(
      stack,
      [
        [1, '', 'true', 'No'],
        [2, '', 'true', 'No'],
      ],
      '2026/12/01/0600',
    );
    expect(after.usersEnqueued).toBe(0);
  }, 180_000);

  it('refuses a subscription mapping that cannot be right, naming what is wrong', () => {
    const parse = (subscriptions: unknown[], fields: Record<string, string> = {}) =>
      parseSyncConfig(
        JSON.stringify({
          destinations: [{ name: 'D', segments: [{ table: 'T', brazeSegmentId: 's' }], matching: { customerIdColumn: 'Id' }, fields, subscriptions }],
        }),
        'test',
      );
    expect(() => parse([{ column: 'C' }])).toThrow(/subscriptions\.0.*exactly one of channel/s);
    expect(() => parse([{ column: 'C', channel: 'email', subscriptionGroupId: GROUP }])).toThrow(/exactly one of channel/);
    expect(() => parse([{ column: 'C', subscriptionGroupId: 'newsletter' }])).toThrow(/subscriptionGroupId.*UUID/s);
    expect(() => parse([{ column: 'C', subscriptionGroupId: GROUP, values: { Y: 'opted_in' } }])).toThrow(/values\.Y.*"subscribed" or "unsubscribed"/s);
    expect(() => parse([{ column: 'C', channel: 'sms' }])).toThrow(/channel/);
    expect(() => parse([{ column: 'C', channel: 'email' }], { D: 'email_subscribe' })).toThrow(/email_subscribe is already mapped under fields/);
    expect(() =>
      parse([
        { column: 'C', subscriptionGroupId: GROUP },
        { column: 'D', subscriptionGroupId: GROUP.toUpperCase() },
      ]),
    ).toThrow(/subscriptions\.1.*already mapped by subscriptions\[0\]/s);
    expect(() => parse([], { D: 'subscription_groups' })).toThrow(/mapped under subscriptions/);
    expect(parse([{ column: 'C', channel: 'push' }]).destinations[0].subscriptions).toEqual([{ column: 'C', channel: 'push' }]);
  });
});
