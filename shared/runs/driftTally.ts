import { z } from 'zod';

const count = z.number().int().min(0).default(0);

/**
 * Per segment: CI members Braze's segment lacks; Braze members CI does not list (cleared); and
 * Braze members CI does not list under their first key but might under another (a CI row without
 * a customer ID is keyed by e-mail): reported, not cleared.
 */
export const segmentDriftSchema = z.object({ missing: count, stray: count, unresolved: count });

/** One drifted profile of the sample: the identifier redacted as the rejects report does, never an e-mail or name. */
export const driftSampleSchema = z.object({
  identifier: z.string(),
  drift: z.enum(['missing', 'stray', 'stale']),
  attributes: z.array(z.string()),
});

/**
 * What a reconcile found, per diff step and summed for the run: how Braze differs from Customer
 * Insights, and what repairing it costs.
 */
export const driftTallySchema = z.object({
  /** By segment attribute. */
  segments: z.record(z.string(), segmentDriftSchema).default({}),
  /** By mapped attribute: members whose value in Braze is missing or differs, or is held where CI's cell is empty. */
  staleValues: z.record(z.string(), count).default({}),
  /** Profiles that need a repair (each sent once, whatever drifted). */
  profiles: count,
  requests: count,
  dataPoints: count,
  sample: z.array(driftSampleSchema).default([]),
});
export type DriftTally = z.output<typeof driftTallySchema>;

export const DRIFT_SAMPLE_SIZE = 20;

export function emptyDrift(): DriftTally {
  return { segments: {}, staleValues: {}, profiles: 0, requests: 0, dataPoints: 0, sample: [] };
}

export function addDrift(tallies: DriftTally[]): DriftTally {
  const sum = emptyDrift();
  for (const tally of tallies) {
    for (const [name, s] of Object.entries(tally.segments)) {
      const into = (sum.segments[name] ??= { missing: 0, stray: 0, unresolved: 0 });
      into.missing += s.missing;
      into.stray += s.stray;
      into.unresolved += s.unresolved;
    }
    for (const [name, n] of Object.entries(tally.staleValues)) sum.staleValues[name] = (sum.staleValues[name] ?? 0) + n;
    sum.profiles += tally.profiles;
    sum.requests += tally.requests;
    sum.dataPoints += tally.dataPoints;
    for (const sample of tally.sample) if (sum.sample.length < DRIFT_SAMPLE_SIZE) sum.sample.push(sample);
  }
  return sum;
}
