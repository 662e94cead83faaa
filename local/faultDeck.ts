/**
 * Faults dealt from a shuffled deck rather than rolled one request at a time. Each deck holds every
 * configured kind in proportion to its share, and at least once, so a run long enough to go
 * through a deck meets every kind whatever order its requests arrive in; independent rolls of a 1%
 * fault can miss it in a few hundred requests, and which request draws what depends on arrival
 * order, which concurrent senders do not keep.
 */
export class FaultDeck<K extends string> {
  private cards: (K | undefined)[] = [];
  private dealtFor = '';
  private readonly random: () => number;

  constructor(seed: number) {
    this.random = mulberry32(seed);
  }

  /** The fault for the next request (undefined: none), from the deck dealt for these shares. */
  draw(shares: Partial<Record<K, number | undefined>>): K | undefined {
    const kinds = (Object.entries(shares) as [K, number | undefined][]).filter((entry): entry is [K, number] => (entry[1] ?? 0) > 0);
    if (kinds.length === 0) return undefined;
    // The shares can change mid-test (Braze "recovers"): a changed set of shares is a new deck.
    const key = JSON.stringify(kinds);
    if (key !== this.dealtFor || this.cards.length === 0) {
      this.dealtFor = key;
      this.cards = deal(kinds, this.random);
    }
    return this.cards.pop();
  }
}

/** The smallest deck in which the rarest kind appears once: every kind comes back as often as it can. */
function deal<K>(kinds: [K, number][], random: () => number): (K | undefined)[] {
  const size = Math.ceil(1 / Math.min(...kinds.map(([, share]) => share)));
  const cards: (K | undefined)[] = [];
  for (const [kind, share] of kinds) for (let i = Math.max(1, Math.round(share * size)); i > 0; i--) cards.push(kind);
  while (cards.length < size) cards.push(undefined);
  for (let i = cards.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [cards[i], cards[j]] = [cards[j], cards[i]];
  }
  return cards;
}

/** Small seeded PRNG: fault runs repeat exactly for a given seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
