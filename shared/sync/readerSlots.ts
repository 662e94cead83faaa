import type { Clock } from '../clock';

/**
 * How long a step waits for this process's slot before it is handed to another instance. The
 * queue trigger hands an instance up to a batch of messages at once, so one instance can hold
 * every step of a phase while another has none: a step waiting here is a step no idle instance can
 * take. Long enough for an empty partition's step to pass, short next to a step's seconds (a
 * 2-second wait left one of two workers idle for 7 of a refresh's 13 s).
 */
export const READER_SLOT_WAIT_MS = 400;
/** A step handed back comes back after this, plus up to as much again (spread, so copies do not arrive together). */
export const READER_SLOT_RETRY_MS = 200;

/**
 * How many reading steps (map or diff) one process works on at once. A step holds its shard or
 * its partition's buffers in memory; several at once on one instance would multiply that, while
 * another instance could take the extra steps instead. A step that finds no slot waits a moment
 * (small steps end quickly) and is then handed back to the queue, so it goes to whichever
 * instance is free rather than waiting here.
 */
export class ReaderSlots {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly size: number,
    private readonly clock: Clock,
  ) {}

  /** A slot is free now (no step works in each, none waits for one). */
  get free(): boolean {
    return this.busy < this.size && this.waiting.length === 0;
  }

  /** A slot, released by calling the answer (once); undefined when none came free within `waitMs`. */
  async take(waitMs = READER_SLOT_WAIT_MS): Promise<(() => void) | undefined> {
    if (this.busy >= this.size) {
      const freed = new Promise<boolean>((resolve) => {
        const wake = () => resolve(true);
        this.waiting.push(wake);
        void this.clock.sleep(waitMs).then(() => {
          const at = this.waiting.indexOf(wake);
          if (at < 0) return;
          this.waiting.splice(at, 1);
          resolve(false);
        });
      });
      if (!(await freed)) return undefined;
    } else {
      this.busy += 1;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // The slot passes straight to the next waiter, so a newcomer cannot take it in between.
      const next = this.waiting.shift();
      if (next) next();
      else this.busy -= 1;
    };
  }
}
