import { z } from 'zod';

const count = z.number().int().min(0).default(0);

/** Per segment: who joins, leaves, changes (a member before and after whose fields change), stays as is. */
export const segmentPreviewSchema = z.object({ joiners: count, leavers: count, changed: count, unchanged: count });

/** One change of the sample: the identifier redacted as the rejects report does, never an e-mail or name. */
export const previewSampleSchema = z.object({
  identifier: z.string(),
  change: z.enum(['joins', 'leaves', 'changes']),
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
  requests: count,
  dataPoints: count,
  sample: z.array(previewSampleSchema).default([]),
});
export type PreviewTally = z.output<typeof previewTallySchema>;
export type PreviewSample = z.output<typeof previewSampleSchema>;

/** Changes a dry run lists by name; the counts cover everything. */
export const PREVIEW_SAMPLE_SIZE = 20;

export function emptyPreview(): PreviewTally {
  return { segments: {}, attributes: {}, profilesSent: 0, requests: 0, dataPoints: 0, sample: [] };
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
    sum.requests += tally.requests;
    sum.dataPoints += tally.dataPoints;
    for (const sample of tally.sample) if (sum.sample.length < PREVIEW_SAMPLE_SIZE) sum.sample.push(sample);
  }
  return sum;
}

/** A field the profile does not carry, in a field-hash string. */
export const MISSING = '--------';

/**
 * A short hash of each mapped field's value, in the order of `names`, so a later run can tell
 * which attributes of a changed profile change (the row fingerprint only says that one did).
 */
export function fieldHashes(names: readonly string[], fields: Record<string, unknown>): string {
  let out = '';
  for (const name of names) out += name in fields ? fnv1a32(JSON.stringify(fields[name])) : MISSING;
  return out;
}

/**
 * FNV-1a over UTF-16 code units, as 8 hex digits: computed for every field of every mapped profile,
 * where a crypto hash's per-call cost shows. It only tells a preview which attribute changed (a
 * rare collision undercounts one), never what is sent.
 */
export function fnv1a32(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0).toString(16).padStart(8, '0');
}

/**
 * The attributes whose values differ between two field-hash strings of the same names; every
 * present one when there is nothing to compare with (a new profile, or a state written before
 * field hashes were kept).
 */
export function changedAttributes(names: readonly string[], now: string, before: string | undefined): string[] {
  const changed: string[] = [];
  const comparable = before !== undefined && before.length === now.length;
  for (let i = 0; i < names.length; i++) {
    const value = now.slice(i * 8, i * 8 + 8);
    if (comparable ? value !== before.slice(i * 8, i * 8 + 8) : value !== MISSING) changed.push(names[i]);
  }
  return changed;
}
