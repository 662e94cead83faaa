import { HttpRequest, InvocationContext } from '@azure/functions';
import { runPreview } from '../../functions/runPreview';
import { runSummary, type RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { resumeRun } from '../../shared/sync/resumeRun';
import { customerId, makeProfiles, writeRefresh, type ModelProfile } from '../helpers/profileModel';
import { expectExactCounts } from '../helpers/expectations';
import { startTestStack, testConfig, type TestStack } from '../helpers/testStack';

const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });

interface Preview {
  profiles: { wouldSend: number; leaving: number };
  brazeRequests: number;
  dataPoints: number;
  segments: Record<string, { joiners: number; leavers: number; changed: number; unchanged: number }>;
  attributes: Record<string, number>;
  sample: { identifier: string; change: string; attributes: string[] }[];
  rows: { read: number; unchanged: number; wouldSend: number; rejected: number };
}

async function runOnce(stack: TestStack, options: { dryRun?: boolean } = {}): Promise<RunRecord> {
  const outcome = await requestSync(stack.app.deps, { trigger: 'http', dryRun: options.dryRun });
  expect(outcome.problems).toEqual([]);
  const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 90_000 });
  expect(run.status).toBe('completed');
  return run;
}

async function previewOf(runId: string): Promise<Preview> {
  const answer = await runPreview(new HttpRequest({ url: `http://localhost/api/runs/${runId}/preview`, method: 'GET', params: { id: runId } }), context());
  expect(answer.status).toBe(200);
  return answer.jsonBody as Preview;
}

const ATTRIBUTE = { HighValue: 'ci_high_value', Newsletter: 'ci_newsletter' } as const;

/** What a real run from `before` to `after` changes, worked out from the model alone. */
function expectedChanges(before: Map<string, ModelProfile>, after: Map<string, ModelProfile>) {
  const segments: Record<string, { joiners: number; leavers: number; changed: number; unchanged: number }> = {
    ci_high_value: { joiners: 0, leavers: 0, changed: 0, unchanged: 0 },
    ci_newsletter: { joiners: 0, leavers: 0, changed: 0, unchanged: 0 },
  };
  const attributes: Record<string, number> = {};
  const bump = (name: string) => (attributes[name] = (attributes[name] ?? 0) + 1);
  let sent = 0;
  let leaving = 0;
  for (const [id, now] of after) {
    const was = before.get(id);
    const fieldsChange = !was || was.points !== now.points || was.email !== now.email || was.firstName !== now.firstName;
    let touched = fieldsChange;
    for (const segment of ['HighValue', 'Newsletter'] as const) {
      const name = ATTRIBUTE[segment];
      const inNow = now.segments.has(segment);
      const inBefore = was?.segments.has(segment) ?? false;
      if (inNow !== inBefore) {
        segments[name][inNow ? 'joiners' : 'leavers'] += 1;
        bump(name);
        touched = true;
      }
      if (inNow && inBefore) segments[name][fieldsChange ? 'changed' : 'unchanged'] += 1;
    }
    if (!was) ['email', 'first_name', 'loyalty_points'].forEach(bump);
    else if (was.points !== now.points) bump('loyalty_points');
    if (touched) sent += 1;
  }
  for (const [id, was] of before) {
    if (after.has(id)) continue;
    leaving += 1;
    sent += 1;
    for (const segment of was.segments) {
      segments[ATTRIBUTE[segment]].leavers += 1;
      bump(ATTRIBUTE[segment]);
    }
  }
  return { segments, attributes, sent, leaving };
}

describe('dry run: know before you send', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('changes nothing in Braze or in the state, and previews exactly what the real run then does', async () => {
    stack = await startTestStack({ env: { PROFILES_PER_SHARD: '300' } });
    const deps = stack.app.deps;
    const first = makeProfiles(1, 1500);
    await writeRefresh(deps.storage.exportContainer, first.values(), '2026/11/27/0600');
    const run1 = await runOnce(stack);
    // Not a dry run (a first sync, nothing held): the preview endpoint says where its counts are.
    const notDry = await runPreview(
      new HttpRequest({ url: `http://localhost/api/runs/${run1.runId}/preview`, method: 'GET', params: { id: run1.runId } }),
      context(),
    );
    expect(notDry).toEqual({ status: 404, jsonBody: { error: `run ${run1.runId} is not a dry run: its counts are in GET /api/runs/${run1.runId}` } });

    // Leavers of every segment or one, joiners, changed values.
    const second = new Map<string, ModelProfile>();
    for (const [id, p] of first) second.set(id, { ...p, segments: new Set(p.segments) });
    for (let n = 1; n <= 1500; n++) {
      const p = second.get(customerId(n))!;
      if (n % 25 === 1) second.delete(customerId(n));
      else if (n % 25 === 2 && p.segments.size === 2) p.segments.delete('Newsletter');
      else if (n % 25 === 3 && !p.segments.has('Newsletter')) p.segments.add('Newsletter');
      else if (n % 25 === 4) p.points += 7;
    }
    for (const [id, p] of makeProfiles(1501, 1620)) second.set(id, p);
    await writeRefresh(deps.storage.exportContainer, second.values(), '2026/11/28/0600');

    const pointer = await deps.destinations.statePointer(run1.modelJsonPath);
    const brazeBefore = { requests: stack.braze.stats.requests, applied: stack.braze.stats.objectsApplied };
    const dry = await runOnce(stack, { dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(dry.runId).toMatch(/^d-/);
    // Nothing sent, nothing of the state touched.
    expect(stack.braze.stats.requests).toBe(brazeBefore.requests);
    expect(await deps.destinations.statePointer(run1.modelJsonPath)).toEqual(pointer);
    expect(runSummary(dry).note).toMatch(/dry run: nothing was sent/);
    expect(runSummary(dry).rows.pending).toBe(0);
    expect(await resumeRun(deps, dry.runId)).toMatchObject({ kind: 'refused', reason: expect.stringContaining('dry run') });

    const preview = await previewOf(dry.runId);
    const expected = expectedChanges(first, second);
    expect(preview.profiles).toEqual({ wouldSend: expected.sent, leaving: expected.leaving });
    expect(preview.segments).toEqual(expected.segments);
    expect(preview.attributes).toEqual(expected.attributes);
    expect(preview.sample.length).toBeGreaterThan(0);
    for (const change of preview.sample) expect(change.identifier).toMatch(/^external_id 00000000-/);
    expect(JSON.stringify(preview)).not.toContain('@example.com');

    // The real run of the same refresh does what the preview said, to the request and data point.
    const real = await runOnce(stack);
    expect(real.runId).not.toBe(dry.runId);
    expectExactCounts(real);
    expect(real.usersEnqueued).toBe(preview.profiles.wouldSend);
    expect(real.exitsEnqueued).toBe(preview.profiles.leaving);
    expect(real.brazeRequests).toBe(preview.brazeRequests);
    expect(real.dataPointsSent).toBe(preview.dataPoints);
    expect(real.rowsSkippedUnchanged).toBe(preview.rows.unchanged);
    expect(stack.braze.stats.objectsApplied - brazeBefore.applied).toBe(preview.profiles.wouldSend);
  }, 150_000);

  it('a destination marked dryRun only ever previews, and a first sync previews everything', async () => {
    stack = await startTestStack({ config: testConfig({ dryRun: true }) });
    const deps = stack.app.deps;
    const profiles = makeProfiles(1, 400);
    await writeRefresh(deps.storage.exportContainer, profiles.values(), '2026/11/27/0600');
    const dry = await runOnce(stack);
    expect(dry.dryRun).toBe(true);
    expect(stack.braze.stats.requests).toBe(0);
    expect(await deps.destinations.statePointer(dry.modelJsonPath)).toBeUndefined();
    const preview = await previewOf(dry.runId);
    expect(preview.profiles.wouldSend).toBe(400);
    expect(preview.attributes.loyalty_points).toBe(400);
    expect(preview.brazeRequests).toBeGreaterThanOrEqual(Math.ceil(400 / 75));
    // A malformed id is refused before any lookup.
    const answer = await runPreview(new HttpRequest({ url: 'http://localhost/api/runs/r-0/preview', method: 'GET', params: { id: 'r-0' } }), context());
    expect(answer).toEqual({ status: 400, jsonBody: { error: 'run id is malformed' } });
  }, 60_000);
});
