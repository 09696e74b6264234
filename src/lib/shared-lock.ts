/**
 * A lock with two modes: any number of `shared` tasks run together, an `exclusive` task runs
 * alone. A waiting exclusive task goes first: shared tasks that ask after it wait for it, so
 * a steady stream of shared tasks cannot starve it.
 *
 * Used by the tgt driver: changes confined to one existing target (its own tid, its own
 * account names) run side by side, anything that touches tgtd's shared state (new target
 * ids, portals, a user name moving) runs alone.
 */
export class SharedLock {
  #shared = 0;
  #exclusive = false;
  readonly #queue: { exclusive: boolean; start: () => void }[] = [];

  shared<T>(task: () => Promise<T>): Promise<T> {
    return this.#run(false, task);
  }

  exclusive<T>(task: () => Promise<T>): Promise<T> {
    return this.#run(true, task);
  }

  async #run<T>(exclusive: boolean, task: () => Promise<T>): Promise<T> {
    await new Promise<void>((start) => {
      this.#queue.push({ exclusive, start });
      this.#next();
    });
    try {
      return await task();
    } finally {
      if (exclusive) this.#exclusive = false;
      else this.#shared--;
      this.#next();
    }
  }

  /** Starts what may start now, in the order asked. */
  #next(): void {
    while (this.#queue.length > 0 && !this.#exclusive) {
      const head = this.#queue[0]!;
      if (head.exclusive) {
        if (this.#shared > 0) return;
        this.#exclusive = true;
      } else {
        this.#shared++;
      }
      this.#queue.shift();
      head.start();
    }
  }
}
