/**
 * Runs async jobs one at a time. A driver changes shared state (tgt's target ids and
 * global accounts, LIO's backstore indexes, one saveconfig.json), so two applies for two
 * machines must not interleave their read-modify-write steps.
 */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(job, job);
    this.#tail = next.catch(() => undefined);
    return next;
  }
}
