export interface ProfileFacts {
  hasPrevious: boolean;
  previousMemberships: number;
  currentMemberships: number;
  /** The mapped fields' fingerprint differs from the one Braze last accepted. */
  fieldsChanged: boolean;
}

export interface ProfileChange {
  /** Nothing to send: memberships and fields are as Braze last accepted them. */
  unchanged: boolean;
  sendFields: boolean;
  /** Membership bits to set true. */
  join: number;
  /** Membership bits to clear (leaver value). */
  leave: number;
}

/**
 * What a profile of this refresh needs in Braze, given what Braze last accepted. Only bits in
 * `syncedMask` are this run's business; other memberships are left as they are.
 */
export function diffProfile(facts: ProfileFacts, syncedMask: number, force: boolean): ProfileChange {
  const previous = facts.hasPrevious ? (facts.previousMemberships & syncedMask) >>> 0 : 0;
  const current = (facts.currentMemberships & syncedMask) >>> 0;
  if (force || !facts.hasPrevious) return { unchanged: false, sendFields: true, join: current, leave: (previous & ~current) >>> 0 };
  const sendFields = facts.fieldsChanged;
  const join = (current & ~previous) >>> 0;
  const leave = (previous & ~current) >>> 0;
  return { unchanged: !sendFields && join === 0 && leave === 0, sendFields, join, leave };
}
