import { HttpRequest, InvocationContext } from '@azure/functions';
import { reconcileHttp } from '../../functions/reconcileHttp';
import { runPreview } from '../../functions/runPreview';
import { parseSyncConfig, type MembershipConfig } from '../../shared/config/syncConfig';
import type { RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { brazeMismatches, expectExactCounts } from '../helpers/expectations';
import { customerId, makeProfiles, writeRefresh, type ModelProfile } from '../helpers/profileModel';
import { stacksOnSharedAzurite, type TestStack } from '../helpers/testStack';

/**
 * Memberships as one array attribute. Braze's rules for arrays (braze-docs
 * _docs/_api/objects_filters/user_attributes_object.md: a whole array set at once, unique values;
 * _docs/_user_guide/data/custom_data/custom_attributes.md, Arrays: up to 500 items by default, the
 * first dropped beyond) and their cost (_docs/_user_guide/data/data_points.md: "If you set the whole
 * array at once, it will count as a single data point").
 */
const LIST: MembershipConfig = { mode: 'list', attribute: 'ci_segments', whenEmpty: null, maxLength: 500 };
const IDS = { HighValue: 'seg-high-value', Newsletter: 'ci_newsletter' } as const;
const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });

/** What Braze holds for a refresh's members as a list; `gone` were members once and left. */
function expectedAsList(refresh: Map<string, ModelProfile>, gone: ModelProfile[], whenEmpty: null | [] = null) {
  const expected = new Map<string, Record<string, unknown>>();
  for (const p of gone)
    expected.set(`external_id:${p.id}`, {
      email: p.email,
      first_name: p.firstName,
      loyalty_points: p.points,
      ...(whenEmpty ? { ci_segments: whenEmpty } : {}),
    });
  for (const p of refresh.values()) {
    const ids = (['HighValue', 'Newsletter'] as const).filter((s) => p.segments.has(s)).map((s) => IDS[s]);
    expected.set(`external_id:${p.id}`, { email: p.email, first_name: p.firstName, loyalty_points: p.points, ci_segments: ids });
  }
  return expected;
}

async function sync(stack: TestStack, refresh: Map<string, ModelProfile>, folder: string, dryRun = false): Promise<RunRecord> {
  await writeRefresh(stack.app.deps.storage.exportContainer, refresh.values(), folder, 2);
  const outcome = await requestSync(stack.app.deps, { trigger: 'http', dryRun });
  expect(outcome.problems).toEqual([]);
  const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
  expect({ status: run.status, error: run.error }).toEqual({ status: 'completed', error: undefined });
  if (!dryRun) expectExactCounts(run);
  return run;
}

describe('memberships as one list', () => {
  const stacks = stacksOnSharedAzurite();

  it('switches from one attribute per segment to a list and back, previewed, clearing what the other form left', async () => {
    const stack = await stacks.start({
      braze: { keepObjects: true, segments: { [IDS.HighValue]: 'ci_segments', [IDS.Newsletter]: 'ci_segments' } },
      env: { RECONCILE_POLL_SECONDS: '1' },
    });
    const braze = stack.braze;
    const first = makeProfiles(1, 60);
    await sync(stack, first, '2026/11/28/0600');
    expect(braze.profile(`external_id:${customerId(2)}`)).toMatchObject({ ci_high_value: true, ci_newsletter: true });

    // The destination now keeps memberships as a list. Profile 5's points change, profile 7 left.
    const destination = stack.app.deps.config.destinations[0];
    destination.membership = { ...LIST };
    const second = makeProfiles(1, 60);
    second.get(customerId(5))!.points = 500;
    const seven = second.get(customerId(7))!;
    second.delete(customerId(7));
    const flagsHeld = [...first.values()].reduce((n, p) => n + p.segments.size, 0);
    const dry = await sync(stack, second, '2026/11/29/0600', true);
    const answer = await runPreview(
      new HttpRequest({ url: `http://localhost/api/runs/${dry.runId}/preview`, method: 'GET', params: { id: dry.runId } }),
      context(),
    );
    const preview = answer.jsonBody as {
      profiles: Record<string, number>;
      attributes: Record<string, number>;
      dataPoints: number;
      sample: { change: string }[];
    };
    expect(preview.profiles).toEqual({ wouldSend: 60, leaving: 1, rewriting: 60 });
    expect(preview.attributes).toEqual({
      ci_segments: 60,
      ci_high_value: [...first.values()].filter((p) => p.segments.has('HighValue')).length,
      ci_newsletter: [...first.values()].filter((p) => p.segments.has('Newsletter')).length,
      loyalty_points: 1,
    });
    // Each profile: its old flags cleared, one list; profile 5 its fields too (email, first_name, loyalty_points).
    expect(preview.dataPoints).toBe(flagsHeld + 60 + 3);
    expect(preview.sample.every((s) => s.change === 'rewrites' || s.change === 'changes')).toBe(true);

    const run = await sync(stack, second, '2026/11/29/0600');
    expect(run.dataPointsSent).toBe(preview.dataPoints);
    expect(brazeMismatches(braze, expectedAsList(second, [seven]))).toEqual([]);

    // Now incremental: only a changed membership sends its profile's whole list (one data point).
    braze.appliedObjects.length = 0;
    const third = makeProfiles(1, 60);
    third.delete(customerId(7));
    third.get(customerId(5))!.points = 500;
    third.get(customerId(4))!.segments.delete('Newsletter');
    third.get(customerId(9))!.segments.add('Newsletter');
    const eleven = third.get(customerId(11))!;
    third.delete(customerId(11));
    destination.membership = { ...LIST, whenEmpty: [] };
    const quiet = await sync(stack, third, '2026/11/30/0600');
    expect(quiet.usersEnqueued).toBe(3);
    expect(quiet.dataPointsSent).toBe(3);
    expect(new Map(braze.appliedObjects.map((o) => [o.external_id, o]))).toEqual(
      new Map([
        [customerId(4), { external_id: customerId(4), ci_segments: [IDS.HighValue] }],
        [customerId(9), { external_id: customerId(9), ci_segments: [IDS.HighValue, IDS.Newsletter] }],
        [customerId(11), { external_id: customerId(11), ci_segments: [] }],
      ]),
    );
    expect(
      brazeMismatches(
        braze,
        expectedAsList(third, [seven], null).set(`external_id:${eleven.id}`, {
          email: eleven.email,
          first_name: eleven.firstName,
          loyalty_points: 11,
          ci_segments: [],
        }),
      ),
    ).toEqual([]);

    // A reconcile judges membership by the Braze segments built on the list, and repairs a list whole.
    const drifted = braze.profile(`external_id:${customerId(2)}`)!;
    drifted.ci_segments = [IDS.HighValue];
    braze.appliedObjects.length = 0;
    const reconciled = await reconcileHttp(
      new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify({ destination: 'BrazeExport' }) } }),
      context(),
    );
    expect(reconciled.status).toBe(202);
    const [repair] = await stack.app.waitForRuns([(reconciled.jsonBody as { runId: string }).runId], { timeoutMs: 60_000 });
    expect({ status: repair.status, error: repair.error }).toEqual({ status: 'completed', error: undefined });
    expect(braze.appliedObjects).toEqual([{ external_id: customerId(2), ci_segments: [IDS.HighValue, IDS.Newsletter] }]);

    // Back to flags: every list goes, every membership is a flag again.
    destination.membership = { mode: 'flags' };
    await sync(stack, third, '2026/12/01/0600');
    for (const p of third.values()) {
      const held = braze.profile(`external_id:${p.id}`)!;
      expect('ci_segments' in held).toBe(false);
      expect(held.ci_high_value === true).toBe(p.segments.has('HighValue'));
      expect(held.ci_newsletter === true).toBe(p.segments.has('Newsletter'));
    }
    // A profile that had left every segment is no member in either form. Its empty list stays: the
    // state keeps members only, so nothing of it is left to rewrite (README, membership).
    expect(braze.profile(`external_id:${eleven.id}`)).toEqual({ email: eleven.email, first_name: eleven.firstName, loyalty_points: 11, ci_segments: [] });
  }, 180_000);

  it('refuses a list Braze would cut, or one that shares a name with a field or segment attribute', () => {
    const parse = (membership: unknown, segments = 2, fields: Record<string, string> = {}) =>
      parseSyncConfig(
        JSON.stringify({
          destinations: [
            {
              name: 'D',
              segments: Array.from({ length: segments }, (_, i) => ({ table: `T${i}`, brazeSegmentId: `s${i}` })),
              matching: { customerIdColumn: 'Id' },
              fields,
              membership,
            },
          ],
        }),
        'test',
      );
    expect(parse({ mode: 'list' }).destinations[0].membership).toEqual(LIST);
    expect(() => parse({ mode: 'list', maxLength: 25 }, 26)).toThrow(/membership\.maxLength.*26 segments.*cuts this array at 25/s);
    expect(parse({ mode: 'list' }, 32).destinations[0].membership).toMatchObject({ maxLength: 500 });
    expect(() => parse({ mode: 'list', attribute: 'tier' }, 2, { Tier: 'tier' })).toThrow(/membership\.attribute.*"tier" is also a field/s);
    expect(() => parse({ mode: 'list', attribute: 's1' })).toThrow(/"s1" is also the attribute of segment T1/);
    expect(() => parse({ mode: 'list', whenEmpty: false })).toThrow(/whenEmpty/);
    expect(() => parse({ mode: 'lists' })).toThrow(/membership/);
  });
});
