import { rejectsReportName } from '../../shared/runs/runBlobs';
import { rowsAccountedFor, type RunRecord } from '../../shared/runs/runRecord';
import { requestSync } from '../../shared/sync/startSync';
import { csv, writeExport } from '../helpers/exportBuilder';
import { stacksOnSharedAzurite, type TestStack } from '../helpers/testStack';

const ID = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

async function syncOnce(stack: TestStack): Promise<RunRecord> {
  const outcome = await requestSync(stack.app.deps, { trigger: 'http' });
  expect(outcome.problems).toEqual([]);
  expect(outcome.runs).toHaveLength(1);
  const [run] = await stack.app.waitForRuns([outcome.runs[0].runId], { timeoutMs: 60_000 });
  expect(run.status).toBe('completed');
  return run;
}

/** The run's rejects report without its header line: empty when nothing was rejected or dropped. */
async function rejectsOf(stack: TestStack, run: RunRecord): Promise<string[]> {
  const blob = stack.app.deps.storage.stateContainer.getBlobClient(rejectsReportName(run.runId));
  if (!(await blob.exists())) return [];
  return (await blob.downloadToBuffer()).toString('utf8').trim().split('\n').slice(1);
}

describe('an export whose files mix line endings (Azurite + local Braze)', () => {
  const stacks = stacksOnSharedAzurite();

  it('delivers the rows appended with LF to a CRLF file as rows of their own, and reads them as unchanged once CI rewrites the file', async () => {
    const stack = await stacks.start();
    const container = stack.app.deps.storage.exportContainer;
    const crlfRows = [
      [ID(1), 'ana@example.com', 'Ana', '10'],
      [ID(2), 'ben@example.com', 'Ben "B", Jr.', '20'],
    ];
    // Appended by hand to CI's CRLF file: LF endings, quoted or not, one value over two lines.
    const appended = [`"${ID(3)}","cara@example.com","Cara","30"`, `${ID(4)},dan@example.com,Dan,40`, `"${ID(5)}","eve@example.com","Eve\nLine","50"`];
    const newsletterRows = [[ID(1), 'ana@example.com', 'Ana', '10']];
    await writeExport(container, {
      destination: 'BrazeExport',
      segments: [
        {
          table: 'HighValue',
          runFolder: '2026/11/27/0600',
          partitions: [csv(crlfRows, { crlf: true, bom: true }) + appended.map((line) => `${line}\n`).join('')],
        },
        // The reverse: an LF file with a CRLF row appended.
        { table: 'Newsletter', runFolder: '2026/11/27/0600', partitions: [csv(newsletterRows) + `"${ID(6)}","fay@example.com","Fay","60"\r\n`] },
      ],
    });

    const run1 = await syncOnce(stack);
    expect(await rejectsOf(stack, run1)).toEqual([]);
    expect(run1).toMatchObject({ rowsRead: 7, rowsDelivered: 7, rowsRejectedInput: 0, rowsRejectedBraze: 0, rowsFailed: 0, usersDelivered: 6 });
    expect(rowsAccountedFor(run1)).toBe(run1.rowsRead);
    const profile = (n: number) => stack.braze.profile(`external_id:${ID(n)}`);
    expect(profile(1)).toEqual({ email: 'ana@example.com', first_name: 'Ana', loyalty_points: 10, ci_high_value: true, ci_newsletter: true });
    expect(profile(2)).toEqual({ email: 'ben@example.com', first_name: 'Ben "B", Jr.', loyalty_points: 20, ci_high_value: true });
    expect(profile(3)).toEqual({ email: 'cara@example.com', first_name: 'Cara', loyalty_points: 30, ci_high_value: true });
    expect(profile(4)).toEqual({ email: 'dan@example.com', first_name: 'Dan', loyalty_points: 40, ci_high_value: true });
    // A line break inside quotes is part of the value, as written.
    expect(profile(5)).toEqual({ email: 'eve@example.com', first_name: 'Eve\nLine', loyalty_points: 50, ci_high_value: true });
    expect(profile(6)).toEqual({ email: 'fay@example.com', first_name: 'Fay', loyalty_points: 60, ci_newsletter: true });
    expect(stack.braze.profiles.size).toBe(6);

    // CI writes the next refresh whole, CRLF (the LF inside Eve's value as it was), and Dan has left
    // High Value: the rows read from the mixed file are the same rows, so only Dan's exit is sent.
    const rewritten = [...crlfRows, [ID(3), 'cara@example.com', 'Cara', '30'], [ID(5), 'eve@example.com', 'Eve\nLine', '50']];
    await writeExport(container, {
      destination: 'BrazeExport',
      segments: [
        { table: 'HighValue', runFolder: '2026/11/28/0600', partitions: [csv(rewritten, { crlf: true, bom: true })] },
        { table: 'Newsletter', runFolder: '2026/11/28/0600', partitions: [csv([...newsletterRows, [ID(6), 'fay@example.com', 'Fay', '60']])] },
      ],
    });
    const run2 = await syncOnce(stack);
    expect(await rejectsOf(stack, run2)).toEqual([]);
    expect(run2).toMatchObject({
      rowsRead: 6,
      rowsSkippedUnchanged: 6,
      rowsDelivered: 0,
      rowsRejectedInput: 0,
      exitsEnqueued: 1,
      usersEnqueued: 1,
      usersDelivered: 1,
    });
    expect(rowsAccountedFor(run2)).toBe(run2.rowsRead);
    expect(profile(4)).toEqual({ email: 'dan@example.com', first_name: 'Dan', loyalty_points: 40 });
    expect(stack.braze.profiles.size).toBe(6);
  });
});
