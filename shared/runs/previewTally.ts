import { z } from 'zod';

const count = z.number().int().min(0).default(0);

/** Per segment: who joins, leaves, changes (a member before and after whose fields change), stays as is. */
export const segmentPreviewSchema = z.object({ joiners: count, leavers: count, changed: count, unchanged: count });

/** One change of the sample: the identifier redacted as the rejects report does, never an e-mail or name. */
export const previewSampleSchema = z.object({
  identifier: z.string(),
  /**
   * `merges`: an e-mail-only profile merged into the profile of the customer ID its row has now.
   * `renames`: a profile renamed to the canonical spelling of its GUID customer ID.
   * `rewrites`: a profile whose memberships are written in the destination's new membership form.
   * `erases`: a user the destination's erasure table lists, deleted from Braze.
   */
  change: z.enum(['joins', 'leaves', 'changes', 'merges', 'renames', 'rewrites', 'erases']),
  attributes: z.array(z.string()),
});

/**
 * What a dry run found, per diff step and summed for the run: what a real run would change in
 * Braze, and what it would cost.
 */
export const previewTallySchema = z.object({
  /** By segment attribute. */
  segments: z.record(z.string(), segmentPreviewSchema).default({}),
  /** By Braze attribute (fields and segment attributes): profiles whose value would change. */
  attributes: z.record(z.string(), count).default({}),
  profilesSent: count,
  /** E-mail-only profiles that would be merged into the profile of the customer ID their row has now. */
  identified: count,
  /** Profiles whose external_id would be renamed to its GUID's canonical spelling. */
  renamed: count,
  /** Profiles whose memberships would be rewritten: the destination's membership form changed (flags ↔ list). */
  rewritten: count,
  requests: count,
  dataPoints: count,
  sample: z.array(previewSampleSchema).default([]),
});
export type PreviewTally = z.output<typeof previewTallySchema>;
export type PreviewSample = z.output<typeof previewSampleSchema>;

/** Changes a dry run lists by name; the counts cover everything. */
export const PREVIEW_SAMPLE_SIZE = 20;

export function emptyPreview(): PreviewTally {
  return { segments: {}, attributes: {}, profilesSent: 0, identified: 0, renamed: 0, rewritten: 0, requests: 0, dataPoints: 0, sample: [] };
}

export function addPreviews(tallies: PreviewTally[]): PreviewTally {
  const sum = emptyPreview();
  for (const tally of tallies) {
    for (const [name, s] of Object.entries(tally.segments)) {
      const into = (sum.segments[name] ??= { joiners: 0, leavers: 0, changed: 0, unchanged: 0 });
      into.joiners += s.joiners;
      into.leavers += s.leavers;
      into.changed += s.changed;
      into.unchanged += s.unchanged;
    }
    for (const [name, n] of Object.entries(tally.attributes)) sum.attributes[name] = (sum.attributes[name] ?? 0) + n;
    sum.profilesSent += tally.profilesSent;
    sum.identified += tally.identified;
    sum.renamed += tally.renamed;
    sum.rewritten += tally.rewritten;
    sum.requests += tally.requests;
    sum.dataPoints += tally.dataPoints;
    for (const sample of tally.sample) if (sum.sample.length < PREVIEW_SAMPLE_SIZE) sum.sample.push(sample);
  }
  return sum;
}
