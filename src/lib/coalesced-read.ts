/**
 * One read shared by everyone who asks while it waits to be sent. Each caller gets the
 * result of a read that started after it asked, so it sees every change that was complete
 * when it asked (never an older answer); callers that ask while a read is under way share
 * the next one, which starts when that one ends. At most one read runs and one waits.
 *
 * Used for tgtd's listings: in a boot storm a hundred target updates each wanted the whole
 * target listing; one listing per round serves all those asking in that round.
 */
export class CoalescedRead<T> {
  #running: Promise<unknown> | undefined;
  #waiting: Promise<T> | undefined;

  constructor(private readonly read: () => Promise<T>) {}

  get(): Promise<T> {
    if (this.#waiting) return this.#waiting;
    const after = this.#running ?? Promise.resolve();
    const next = after.then(
      () => this.#start(),
      () => this.#start(),
    );
    this.#waiting = next;
    return next;
  }

  #start(): Promise<T> {
    this.#waiting = undefined;
    const running = this.read();
    const settled = running.then(
      () => undefined,
      () => undefined,
    );
    this.#running = settled;
    void settled.then(() => {
      if (this.#running === settled) this.#running = undefined;
    });
    return running;
  }
}
