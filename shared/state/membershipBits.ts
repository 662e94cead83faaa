import { InvalidInputError } from '../errors';

const MAX_ATTRIBUTES = 32;

/**
 * Segment attributes as bits of a 32-bit mask. The run's own segments come first; attributes met
 * in the delivered state that this run does not sync (another segment, a removed one) get the
 * remaining bits and are carried over untouched.
 */
export class MembershipBits {
  private readonly bitOf = new Map<string, number>();
  private readonly names: string[] = [];
  readonly syncedMask: number;

  constructor(syncedAttributes: string[]) {
    for (const name of syncedAttributes) this.bit(name);
    this.syncedMask = this.names.length === 32 ? 0xffffffff : (1 << this.names.length) - 1;
  }

  bit(name: string): number {
    let index = this.bitOf.get(name);
    if (index === undefined) {
      if (this.names.length >= MAX_ATTRIBUTES) throw new InvalidInputError(`more than ${MAX_ATTRIBUTES} segment attributes on one destination`);
      index = this.names.length;
      this.bitOf.set(name, index);
      this.names.push(name);
    }
    return (1 << index) >>> 0;
  }

  maskOf(names: string[]): number {
    let mask = 0;
    for (const name of names) mask = (mask | this.bit(name)) >>> 0;
    return mask;
  }

  namesOf(mask: number): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.names.length; i++) if (mask & (1 << i)) out.push(this.names[i]);
    return out;
  }
}

/**
 * The bits of a run's segments: the synced ones first, then the erasure table's (never synced, never
 * in a state), so every step of the run numbers them alike.
 */
export function runMembershipBits(segments: { attribute: string; erasure?: true }[]): MembershipBits {
  const bits = new MembershipBits(segments.filter((segment) => !segment.erasure).map((segment) => segment.attribute));
  for (const segment of segments) if (segment.erasure) bits.bit(segment.attribute);
  return bits;
}
