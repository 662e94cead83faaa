import { createHash } from 'node:crypto';

/** 64-bit hash of a profile key, as 16 hex characters (what queue messages and state records carry). */
export function keyHash(key: string): string {
  return createHash('md5').update(key).digest('hex').slice(0, 16);
}

/** 64-bit fingerprint of a profile's mapped fields, order-independent. */
export function fieldsFingerprint(fields: Record<string, unknown>): string {
  const names = Object.keys(fields).sort();
  const hash = createHash('md5');
  for (const name of names) hash.update(name).update('\u0000').update(JSON.stringify(fields[name])).update('\u0001');
  return hash.digest('hex').slice(0, 16);
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
  private rows!: Uint32Array;
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
    this.rows = new Uint32Array(capacity);
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
      rows: this.rows,
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
      this.rows[slot] = old.rows[i];
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

  /** Counts a row of this refresh for the profile and adds its segment's membership bit. */
  addRow(hash: string, membershipBit: number): void {
    const slot = this.insertSlot(hash);
    this.curMembers[slot] |= membershipBit;
    this.rows[slot] += 1;
    this.flags[slot] |= FLAG_SEEN;
  }

  /** Marks the profile's object as emitted; answers false if it already was (a later row of the same profile). */
  markEmitted(hash: string): boolean {
    const slot = this.findSlot(hash);
    if (slot < 0) return true;
    if (this.flags[slot] & FLAG_EMITTED) return false;
    this.flags[slot] |= FLAG_EMITTED;
    return true;
  }

  get(hash: string): ProfileSlot | undefined {
    const slot = this.findSlot(hash);
    if (slot < 0) return undefined;
    const flags = this.flags[slot];
    return {
      previousMemberships: this.prevMembers[slot],
      previousFingerprint: this.prevFpHi[slot].toString(16).padStart(8, '0') + this.prevFpLo[slot].toString(16).padStart(8, '0'),
      currentMemberships: this.curMembers[slot],
      rows: this.rows[slot],
      hasPrevious: (flags & FLAG_HAS_PREVIOUS) !== 0,
      seen: (flags & FLAG_SEEN) !== 0,
      emitted: (flags & FLAG_EMITTED) !== 0,
    };
  }
}
