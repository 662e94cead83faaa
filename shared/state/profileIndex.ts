import crypto from 'node:crypto';

// One-shot hashing (Node ≥ 20.12) is several times cheaper per call than createHash().update().digest().
export const md5Hex: (text: string) => string =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (text) => (crypto as unknown as { hash: (algorithm: string, data: string, encoding: string) => string }).hash('md5', text, 'hex')
    : (text) => crypto.createHash('md5').update(text).digest('hex');

/** 64-bit hash of a profile key, as 16 hex characters (what queue messages and state records carry). */
export function keyHash(key: string): string {
  return md5Hex(key).slice(0, 16);
}

/**
 * 64-bit fingerprint of a profile's mapped fields. Fields come in config order, so no sort: a
 * reordered config changes fingerprints once and those profiles are sent again, which is harmless.
 */
export function fieldsFingerprint(fields: Record<string, unknown>): string {
  let text = '';
  for (const name in fields) text += `${name}\u0000${JSON.stringify(fields[name])}\u0001`;
  return md5Hex(text).slice(0, 16);
}

function popcount(mask: number): number {
  let n = mask - ((mask >>> 1) & 0x55555555);
  n = (n & 0x33333333) + ((n >>> 2) & 0x33333333);
  return (((n + (n >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

const EMPTY = 0;
const FLAG_USED = 1;
const FLAG_HAS_PREVIOUS = 2;
const FLAG_SEEN = 4;
const FLAG_EMITTED = 8;

export interface ProfileSlot {
  previousMemberships: number;
  previousFingerprint: string;
  currentMemberships: number;
  /** Input rows that stand for this profile: one per segment it is in. */
  rows: number;
  hasPrevious: boolean;
  seen: boolean;
  emitted: boolean;
}

/**
 * Per-profile facts a refresh diff needs, in typed arrays rather than a Map of objects: 29 bytes a
 * slot, open addressing, so 1M profiles take ~60 MB at most (during growth) instead of several hundred.
 * Keys are 64-bit hashes; identifiers themselves stay in the state blob and the export.
 */
export class ProfileIndex {
  private capacity: number;
  private size = 0;
  private keyHi!: Uint32Array;
  private keyLo!: Uint32Array;
  private prevMembers!: Uint32Array;
  private curMembers!: Uint32Array;
  private prevFpHi!: Uint32Array;
  private prevFpLo!: Uint32Array;
  /** Segments whose row of this profile the sending pass has taken (a second row in one segment is a duplicate). */
  private claimed!: Uint32Array;
  private flags!: Uint8Array;

  constructor(expected = 1024) {
    this.capacity = 1;
    while (this.capacity < expected / 0.7) this.capacity *= 2;
    this.capacity = Math.max(this.capacity, 1024);
    this.allocate(this.capacity);
  }

  get count(): number {
    return this.size;
  }

  get bytes(): number {
    return this.capacity * 29;
  }

  private allocate(capacity: number): void {
    this.keyHi = new Uint32Array(capacity);
    this.keyLo = new Uint32Array(capacity);
    this.prevMembers = new Uint32Array(capacity);
    this.curMembers = new Uint32Array(capacity);
    this.prevFpHi = new Uint32Array(capacity);
    this.prevFpLo = new Uint32Array(capacity);
    this.claimed = new Uint32Array(capacity);
    this.flags = new Uint8Array(capacity);
  }

  private slotOf(hi: number, lo: number, insert: boolean): number {
    const mask = this.capacity - 1;
    let slot = (lo ^ Math.imul(hi, 0x9e3779b1)) & mask;
    for (;;) {
      const flags = this.flags[slot];
      if (flags === EMPTY) {
        if (!insert) return -1;
        this.keyHi[slot] = hi;
        this.keyLo[slot] = lo;
        this.flags[slot] = FLAG_USED;
        this.size += 1;
        return slot;
      }
      if (this.keyHi[slot] === hi && this.keyLo[slot] === lo) return slot;
      slot = (slot + 1) & mask;
    }
  }

  private grow(): void {
    const old = {
      keyHi: this.keyHi,
      keyLo: this.keyLo,
      prevMembers: this.prevMembers,
      curMembers: this.curMembers,
      prevFpHi: this.prevFpHi,
      prevFpLo: this.prevFpLo,
      claimed: this.claimed,
      flags: this.flags,
    };
    const oldCapacity = this.capacity;
    this.capacity *= 2;
    this.size = 0;
    this.allocate(this.capacity);
    for (let i = 0; i < oldCapacity; i++) {
      if (old.flags[i] === EMPTY) continue;
      const slot = this.slotOf(old.keyHi[i], old.keyLo[i], true);
      this.prevMembers[slot] = old.prevMembers[i];
      this.curMembers[slot] = old.curMembers[i];
      this.prevFpHi[slot] = old.prevFpHi[i];
      this.prevFpLo[slot] = old.prevFpLo[i];
      this.claimed[slot] = old.claimed[i];
      this.flags[slot] = old.flags[i];
    }
  }

  private insertSlot(hash: string): number {
    if ((this.size + 1) / this.capacity > 0.7) this.grow();
    return this.slotOf(parseInt(hash.slice(0, 8), 16), parseInt(hash.slice(8, 16), 16), true);
  }

  private findSlot(hash: string): number {
    return this.slotOf(parseInt(hash.slice(0, 8), 16), parseInt(hash.slice(8, 16), 16), false);
  }

  /** Loads one record of the delivered state. */
  setPrevious(hash: string, memberships: number, fingerprint: string): void {
    const slot = this.insertSlot(hash);
    this.prevMembers[slot] = memberships;
    this.prevFpHi[slot] = parseInt(fingerprint.slice(0, 8), 16);
    this.prevFpLo[slot] = parseInt(fingerprint.slice(8, 16), 16);
    this.flags[slot] |= FLAG_HAS_PREVIOUS;
  }

  /** The profile is in this segment of the refresh. */
  addMembership(hash: string, membershipBit: number): void {
    const slot = this.insertSlot(hash);
    this.curMembers[slot] |= membershipBit;
    this.flags[slot] |= FLAG_SEEN;
  }

  /** Takes the profile's row of this segment; false when the segment already had a row of it (a duplicate). */
  claimRow(hash: string, membershipBit: number): boolean {
    const slot = this.insertSlot(hash);
    if (this.claimed[slot] & membershipBit) return false;
    this.claimed[slot] |= membershipBit;
    return true;
  }

  /** Marks the profile's object as emitted; answers false if it already was (a later row of the same profile). */
  markEmitted(hash: string): boolean {
    const slot = this.findSlot(hash);
    if (slot < 0) return true;
    if (this.flags[slot] & FLAG_EMITTED) return false;
    this.flags[slot] |= FLAG_EMITTED;
    return true;
  }

  /** Whether Braze last accepted exactly these fields for the profile (compared as numbers: no strings built). */
  sameFingerprint(hash: string, fingerprint: string): boolean {
    const slot = this.findSlot(hash);
    if (slot < 0 || !(this.flags[slot] & FLAG_HAS_PREVIOUS)) return false;
    return this.prevFpHi[slot] === parseInt(fingerprint.slice(0, 8), 16) && this.prevFpLo[slot] === parseInt(fingerprint.slice(8, 16), 16);
  }

  get(hash: string): ProfileSlot | undefined {
    const slot = this.findSlot(hash);
    if (slot < 0) return undefined;
    const flags = this.flags[slot];
    const hi = this.prevFpHi[slot];
    const lo = this.prevFpLo[slot];
    return {
      // Built only when asked for: most profiles of a steady refresh never need it.
      get previousFingerprint() {
        return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
      },
      previousMemberships: this.prevMembers[slot],
      currentMemberships: this.curMembers[slot],
      rows: popcount(this.curMembers[slot]),
      hasPrevious: (flags & FLAG_HAS_PREVIOUS) !== 0,
      seen: (flags & FLAG_SEEN) !== 0,
      emitted: (flags & FLAG_EMITTED) !== 0,
    };
  }
}
