/**
 * Runs tasks one at a time per key; different keys run concurrently. A task runs after
 * the previous one of its key has settled, whether that one succeeded or failed. Used so
 * a create and a reset of one overlay never race on its final name, and so an API change
 * and a boot of one machine never interleave in the reconciler.
 */
export class KeyedLock<K = string> {
  readonly #tails = new Map<K, Promise<unknown>>();

  run<T>(key: K, task: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const result = previous.then(task, task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
}

/**
 * One queue for everything: a target driver changes shared state (tgt's target ids and
 * global accounts, LIO's backstore indexes, one saveconfig.json), so two applies for two
 * machines must not interleave their read-modify-write steps.
 */
export class Serial {
  readonly #lock = new KeyedLock<0>();

  run<T>(job: () => Promise<T>): Promise<T> {
    return this.#lock.run(0, job);
  }
}
