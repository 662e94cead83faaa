import { FaultDeck } from '../../local/faultDeck';

describe('the fault deck of the local Braze server and storage proxy', () => {
  it('deals every configured kind in each deck, in proportion to its share', () => {
    const deck = new FaultDeck<'reset' | 'html502' | 'http500'>(7);
    const shares = { reset: 0.02, html502: 0.01, http500: 0.025 };
    for (let round = 0; round < 3; round++) {
      const dealt: Record<string, number> = {};
      for (let i = 0; i < 100; i++) {
        const fault = deck.draw(shares) ?? 'none';
        dealt[fault] = (dealt[fault] ?? 0) + 1;
      }
      // round(2.5) = 3 for http500.
      expect(dealt).toEqual({ reset: 2, html502: 1, http500: 3, none: 94 });
    }
  });

  it('deals a new deck when the shares change, and nothing when none is set', () => {
    const deck = new FaultDeck<'http500'>(1);
    expect(Array.from({ length: 5 }, () => deck.draw({ http500: 1 }))).toEqual(Array(5).fill('http500'));
    expect(Array.from({ length: 5 }, () => deck.draw({}))).toEqual(Array(5).fill(undefined));
    expect(Array.from({ length: 5 }, () => deck.draw({ http500: 0 }))).toEqual(Array(5).fill(undefined));
    const sevenths = Array.from({ length: 70 }, () => deck.draw({ http500: 0.15 }));
    expect(sevenths.filter(Boolean)).toHaveLength(10);
  });

  it('repeats for a seed', () => {
    const draws = (seed: number) => {
      const deck = new FaultDeck<'a' | 'b'>(seed);
      return Array.from({ length: 50 }, () => deck.draw({ a: 0.1, b: 0.05 }));
    };
    expect(draws(3)).toEqual(draws(3));
    expect(draws(3)).not.toEqual(draws(4));
  });
});
