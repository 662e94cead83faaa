import { csv, writeExport } from './exportBuilder';
import type { ContainerClient } from '@azure/storage-blob';

export interface ModelProfile {
  id: string;
  email: string;
  firstName: string;
  points: number;
  segments: Set<'HighValue' | 'Newsletter'>;
}

export const customerId = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

export function makeProfiles(from: number, to: number): Map<string, ModelProfile> {
  const profiles = new Map<string, ModelProfile>();
  for (let n = from; n <= to; n++) {
    const segments = new Set<'HighValue' | 'Newsletter'>();
    if (n % 3 !== 0) segments.add('HighValue');
    if (n % 2 === 0) segments.add('Newsletter');
    if (segments.size === 0) segments.add('HighValue');
    profiles.set(customerId(n), { id: customerId(n), email: `user${n}@example.com`, firstName: `First${n}`, points: n, segments });
  }
  return profiles;
}

/** Writes the profiles as a CI refresh: each segment split over `partitionsPerSegment` headerless files. */
export async function writeRefresh(
  container: ContainerClient,
  profiles: Iterable<ModelProfile>,
  runFolder: string,
  partitionsPerSegment = 2,
  destination = 'BrazeExport',
) {
  const rows: Record<'HighValue' | 'Newsletter', string[][]> = { HighValue: [], Newsletter: [] };
  for (const p of profiles) for (const s of p.segments) rows[s].push([p.id, p.email, p.firstName, String(p.points)]);
  const split = (all: string[][]) => Array.from({ length: partitionsPerSegment }, (_, i) => csv(all.filter((_, j) => j % partitionsPerSegment === i)));
  return writeExport(container, {
    destination,
    segments: [
      { table: 'HighValue', runFolder, partitions: split(rows.HighValue) },
      { table: 'Newsletter', runFolder, partitions: split(rows.Newsletter) },
    ],
  });
}

/** What Braze must hold after syncing these refreshes in order (leavers lose the attribute, keep their fields). */
export function expectedBraze(refreshes: Map<string, ModelProfile>[]): Map<string, Record<string, unknown>> {
  const expected = new Map<string, Record<string, unknown>>();
  for (const refresh of refreshes) {
    for (const [key, profile] of expected) {
      if (!refresh.has(key.slice('external_id:'.length))) {
        delete profile.ci_high_value;
        delete profile.ci_newsletter;
      }
    }
    for (const p of refresh.values()) {
      const profile: Record<string, unknown> = { email: p.email, first_name: p.firstName, loyalty_points: p.points };
      if (p.segments.has('HighValue')) profile.ci_high_value = true;
      if (p.segments.has('Newsletter')) profile.ci_newsletter = true;
      expected.set(`external_id:${p.id}`, profile);
    }
  }
  return expected;
}
