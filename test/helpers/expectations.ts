import type { ContainerClient } from '@azure/storage-blob';
import type { BrazeServer } from '../../local/brazeServer';
import { rowsAccountedFor, type RunRecord } from '../../shared/runs/runRecord';

/** Profiles where Braze differs from what it must hold, each as one readable line; empty when equal. */
export function brazeMismatches(braze: BrazeServer, expected: Map<string, Record<string, unknown>>): string[] {
  const out: string[] = [];
  const norm = (o: Record<string, unknown> | undefined) => o && JSON.stringify(Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b))));
  for (const [key, profile] of expected) if (norm(braze.profile(key)) !== norm(profile)) out.push(`${key}: ${norm(braze.profile(key))} ≠ ${norm(profile)}`);
  if (braze.profiles.size !== expected.size) out.push(`Braze holds ${braze.profiles.size} profiles, expected ${expected.size}`);
  return out;
}

/** Every row and every enqueued profile has exactly one ending. */
export function expectExactCounts(run: RunRecord): void {
  expect(rowsAccountedFor(run)).toBe(run.rowsRead);
  expect(run.usersDelivered + run.usersRejected + run.usersFailed).toBe(run.usersEnqueued);
  expect(run.rowsEnqueued).toBe(run.rowsDelivered + run.rowsRejectedBraze + run.rowsFailed);
}

/** The run completed with `delivered` profiles delivered, each row and profile counted once, and Braze holds exactly `expected`. */
export function expectCompletedWith(run: RunRecord, delivered: number, braze: BrazeServer, expected: Map<string, Record<string, unknown>>): void {
  expect(run.status).toBe('completed');
  expect(run.usersDelivered).toBe(delivered);
  expectExactCounts(run);
  expect(brazeMismatches(braze, expected)).toEqual([]);
}

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 30_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * The blobs a completed run leaves under `runs/<id>/` once its finalizer has cleaned up (besides
 * its touched/ log). The
 * status turns `completed` before the working blobs go (a finalizer that crashed in between must
 * still find them), so this waits up to `timeoutMs` for only the kept ones to remain.
 */
export async function runFolderAfterCleanup(container: ContainerClient, runId: string, kept: string[], timeoutMs = 15_000): Promise<string[]> {
  // What the run did to each profile (touched/) stays with the report, for GET /api/users/{id}: key hashes only.
  const list = async () => {
    const names: string[] = [];
    for await (const item of container.listBlobsFlat({ prefix: `runs/${runId}/` })) if (!item.name.startsWith(`runs/${runId}/touched/`)) names.push(item.name);
    return names.sort();
  };
  await waitFor(async () => (await list()).every((name) => kept.includes(name)), timeoutMs).catch(() => undefined);
  return list();
}
