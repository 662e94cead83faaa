import type { GuardConfig } from '../config/syncConfig';

/** What a run would do to one segment: members Braze holds for it now, and how many of them it would clear. */
export interface SegmentChange {
  members: number;
  cleared: number;
}

export interface RunChange {
  /** By segment attribute. */
  segments: Record<string, SegmentChange>;
  /** Profiles the run would send (leavers included), and the profiles the delivered state holds. */
  profilesSent: number;
  profilesBefore: number;
  /** A forced run sends everyone in full on purpose: its share of changed profiles is no alarm. */
  force: boolean;
  /** Users the run would delete from Braze (the destination's erasure table). */
  erasing?: number;
}

/**
 * Why a run must wait for a person, one line per limit it passes (empty: it may send). A share is
 * passed only by more than `minProfiles` profiles, so small segments moving by whole members do
 * not hold every run. Counts and shares only: nothing here names a profile.
 */
export function guardVerdict(guard: GuardConfig, change: RunChange): string[] {
  const reasons: string[] = [];
  const percent = (share: number) => `${Math.round(share * 1000) / 10}%`;
  if (guard.maxClearedShare !== null) {
    for (const [segment, { members, cleared }] of Object.entries(change.segments)) {
      if (members === 0 || cleared < guard.minProfiles) continue;
      const share = cleared / members;
      if (share > guard.maxClearedShare)
        reasons.push(
          `${segment}: ${cleared} of its ${members} members would be cleared (${percent(share)}; the guard allows ${percent(guard.maxClearedShare)})`,
        );
    }
  }
  if (guard.maxChangedShare !== null && !change.force && change.profilesBefore > 0 && change.profilesSent >= guard.minProfiles) {
    const share = change.profilesSent / change.profilesBefore;
    if (share > guard.maxChangedShare)
      reasons.push(
        `${change.profilesSent} profiles would change, ${percent(share)} of the ${change.profilesBefore} Braze holds for this destination (the guard allows ${percent(guard.maxChangedShare)})`,
      );
  }
  if (guard.maxErasures !== null && (change.erasing ?? 0) > guard.maxErasures)
    reasons.push(`${change.erasing} users would be deleted from Braze, which cannot be undone (the guard allows ${guard.maxErasures} a run)`);
  return reasons;
}
