import type { Logger } from "pino";
import { errorText } from "../../lib/error-text.js";

/**
 * What the tgt driver keeps per target for a boot's next CHAP secret: an account made in
 * tgtd ahead of the boot, not bound to any target, whose secret only this process knows.
 *
 * Why: tgt cannot change a password, so each boot's new secret was delete, new, bind (plus
 * a check), and tgt's account delete walks every target, looking each one up by tid: 2.8 ms
 * of tgtd's one loop at 500 targets. In a 9 am storm tgtd's loop is also serving every
 * PC's reads, and a trace of 500 PCs (bench/storm) found each management request taking
 * 40-130 ms through it and scripts waiting seconds for their turn. With a spare ready, the
 * boot's secret is two cheap requests (unbind the old account, bind the spare) and the
 * costly ones (delete the old account, make the next spare) wait until tgtd has been left
 * alone for a while.
 *
 * The spare takes the other of two names per target (`alternateUser`), so the CHAP user
 * name a machine logs in with alternates between two values from boot to boot; the store
 * holds the one in force.
 */
export interface SpareAccount {
  user: string;
  password: string;
}

/** Marks the second of a target's two account names; no machine's generated name has ':'. */
const SPARE_MARK = ":b";

/** The other of a target's two account names. */
export function alternateUser(user: string): string {
  return user.endsWith(SPARE_MARK) ? user.slice(0, -SPARE_MARK.length) : `${user}${SPARE_MARK}`;
}

export interface SpareAccountsOptions {
  /** How long tgtd must be left without a change of ours before spares are made. */
  quietMs: number;
  /** Makes the target's spare in tgtd (and deletes its retired account first); false: none. */
  make: (iqn: string) => Promise<boolean>;
  logger: Logger;
  clock?: () => number;
}

export class SpareAccounts {
  /** Per target: its spare, made in tgtd and bound nowhere. */
  readonly #ready = new Map<string, SpareAccount>();
  /** Per target: its account of an earlier boot, bound nowhere, still to be deleted. */
  readonly #retired = new Map<string, string>();
  /** Targets that want a spare made (or their retired account deleted). */
  readonly #wanted = new Set<string>();
  #lastBusy = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  readonly #clock: () => number;

  constructor(private readonly o: SpareAccountsOptions) {
    this.#clock = o.clock ?? Date.now;
  }

  /** A change of a target starts: spares wait until tgtd has been quiet for quietMs. */
  busy(): void {
    this.#lastBusy = this.#clock();
  }

  ready(iqn: string): SpareAccount | undefined {
    return this.#ready.get(iqn);
  }

  retired(iqn: string): string | undefined {
    return this.#retired.get(iqn);
  }

  /** The spare made in tgtd (by `make`). */
  made(iqn: string, spare: SpareAccount): void {
    this.#ready.set(iqn, spare);
  }

  /** The retired account is deleted in tgtd (by `make`). */
  retiredDeleted(iqn: string): void {
    this.#retired.delete(iqn);
  }

  /** The target's spare is now its bound account; `old`, its account before, is retired. */
  swapped(iqn: string, old: string): void {
    this.#ready.delete(iqn);
    this.#retired.set(iqn, old);
    this.want(iqn);
  }

  /** The target is bound to `user` now (any path): a spare of that name is one no more. */
  inUse(iqn: string, user: string): void {
    if (this.#ready.get(iqn)?.user === user) this.#ready.delete(iqn);
    if (this.#retired.get(iqn) === user) this.#retired.delete(iqn);
  }

  /** The target's own account `old`, bound nowhere now, is to be deleted. */
  retire(iqn: string, old: string): void {
    this.#retired.set(iqn, old);
  }

  /** Forgets the target (removed, or its spare unusable); the accounts tgtd still has. */
  forget(iqn: string): string[] {
    const left = [this.#ready.get(iqn)?.user, this.#retired.get(iqn)].filter(
      (u): u is string => u !== undefined,
    );
    this.#ready.delete(iqn);
    this.#retired.delete(iqn);
    this.#wanted.delete(iqn);
    return left;
  }

  /** The target should have a spare: made once tgtd has been quiet for quietMs. */
  want(iqn: string): void {
    this.#wanted.add(iqn);
    this.#arm(this.o.quietMs);
  }

  /** Stops the timer (the daemon stops): nothing more is made. */
  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#wanted.clear();
  }

  #arm(ms: number): void {
    if (this.#timer || this.#running) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#run();
    }, ms);
    this.#timer.unref();
  }

  /**
   * One target at a time, each after the other: tgtd gets one of these requests at once,
   * and a change of ours (a boot) stops the round until tgtd is quiet again.
   */
  async #run(): Promise<void> {
    const wait = this.#lastBusy + this.o.quietMs - this.#clock();
    if (wait > 0) {
      this.#arm(wait);
      return;
    }
    this.#running = true;
    let made = 0;
    let failed = 0;
    let firstError: string | undefined;
    try {
      for (const iqn of this.#wanted) {
        if (this.#clock() - this.#lastBusy < this.o.quietMs) break;
        this.#wanted.delete(iqn);
        try {
          if (await this.o.make(iqn)) made++;
        } catch (err) {
          // The boot takes the longer path (delete, new, bind): slower, as safe. One line
          // per round, not per target: with tgtd down every target fails alike.
          failed++;
          firstError ??= errorText(err);
          this.o.logger.debug({ iqn, err: errorText(err) }, "tgt spare account not made");
        }
      }
    } finally {
      this.#running = false;
      const counts = { made, failed, left: this.#wanted.size };
      if (failed > 0)
        this.o.logger.warn(
          { ...counts, err: firstError },
          "tgt spare accounts not all made: those boots delete and make their account again",
        );
      else if (made > 0) this.o.logger.info(counts, "tgt spare accounts made");
      if (this.#wanted.size > 0) this.#arm(this.o.quietMs);
    }
  }
}
