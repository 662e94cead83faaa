import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { HttpRequest, InvocationContext } from '@azure/functions';
import { reconcileHttp } from '../../functions/reconcileHttp';
import { MAX_LINE_BYTES } from '../../shared/reconcile/exportArchive';
import { exportRequestBlobName } from '../../shared/runs/runBlobs';
import type { RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { waitFor } from '../helpers/expectations';
import { makeProfiles, writeRefresh } from '../helpers/profileModel';
import { startTestStack, type TestStack } from '../helpers/testStack';

const context = () => new InvocationContext({ functionName: 'test', invocationId: 'test', logHandler: () => undefined });
const SEGMENTS = { 'seg-high-value': 'ci_high_value', ci_newsletter: 'ci_newsletter' };

describe('a hostile segment export fails the reconcile with the reason, and the run ends', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  /** A stack whose destination has been synced once, so a reconcile has a refresh to compare with. */
  async function syncedStack(exportDelayMs: number): Promise<TestStack> {
    stack = await startTestStack({ braze: { segments: SEGMENTS, exportDelayMs }, env: { RECONCILE_POLL_SECONDS: '1' } });
    await writeRefresh(stack.app.deps.storage.exportContainer, makeProfiles(1, 50).values(), '2026/11/28/0600', 1);
    const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
    const [synced] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
    expect(synced.status).toBe('completed');
    return stack;
  }

  async function startReconcile(): Promise<string> {
    const answer = await reconcileHttp(
      new HttpRequest({ url: 'http://localhost/api/reconcile', method: 'POST', body: { string: JSON.stringify({ destination: 'BrazeExport' }) } }),
      context(),
    );
    expect(answer.status).toBe(202);
    return (answer.jsonBody as { runId: string }).runId;
  }

  const settled = async (s: TestStack, runId: string): Promise<RunRecord> => (await s.app.waitForRuns([runId], { timeoutMs: 60_000 }))[0];

  it('fails a reconcile whose Braze export holds a user line longer than MAX_LINE_BYTES, naming the segment and the cap, never the line', async () => {
    const s = await syncedStack(50);
    // A member of the newsletter segment in Braze whose one attribute is larger than any user's line
    // may be: the export's zip is small (it deflates ~1,000:1), its line is not.
    s.braze.profiles.set('external_id:hoarder', { ci_newsletter: true, notes: `hoard-${'z'.repeat(5 * 1024 * 1024)}` });
    const track = s.braze.stats.trackRequests;

    const runId = await startReconcile();
    const run = await settled(s, runId);

    expect(run.status).toBe('failed');
    expect(MAX_LINE_BYTES).toBe(4 * 1024 * 1024);
    expect(run.error).toMatch(
      /^Braze's export of segment "ci_newsletter" \(Newsletter\): the archive's [0-9a-f-]{36}\/0\.txt line \d+ is longer than 4 MiB, the most a user's line may be; refused$/,
    );
    expect(s.log.lines.join('\n')).not.toContain('hoard-zzz');
    // Nothing was sent, and the downloaded archives are gone: the other segment's export step may
    // still be reading its own when this one fails the run, and removes it as it ends.
    expect(s.braze.stats.trackRequests).toBe(track);
    const left = async () => (await readdir(tmpdir())).filter((name) => name.startsWith(`braze-export-${runId}-`));
    await waitFor(async () => (await left()).length === 0, 20_000).catch(() => undefined);
    expect(await left()).toEqual([]);
  }, 120_000);

  it('fails a reconcile whose export URL is plain http to another host, without fetching it or repeating its query', async () => {
    // The exports take an hour: the URL Braze answered is swapped while the reconcile waits for it.
    const s = await syncedStack(3_600_000);
    const runId = await startReconcile();
    const ticket = s.app.deps.storage.stateContainer.getBlockBlobClient(exportRequestBlobName(runId, 0));
    await waitFor(() => ticket.exists());
    const asked = JSON.parse((await ticket.downloadToBuffer()).toString('utf8')) as { objectPrefix: string; url: string; requestedAt: string };
    const text = JSON.stringify({ ...asked, url: `http://braze-exports.invalid/${asked.objectPrefix}.zip?X-Amz-Signature=s3cr3t` });
    await ticket.upload(text, Buffer.byteLength(text));

    const run = await settled(s, runId);

    expect(run.status).toBe('failed');
    expect(run.error).toBe(
      `Braze's export of segment "seg-high-value" (HighValue): the archive's download URL (http://braze-exports.invalid) is not https; refused`,
    );
    expect(s.log.lines.join('\n')).not.toContain('s3cr3t');
  }, 120_000);
});
