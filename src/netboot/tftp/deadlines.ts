// One periodic sweep over every running transfer's deadline (retransmission and lifetime), in
// place of a Node timer per transfer refreshed on every ACK. With 50 lock-step clients that
// refresh ran once per block: it reads the loop clock and re-links the timer in Node's timer
// list. Here an ACK only stores a number, and one interval, running only while transfers exist,
// looks at at most maxTransfers numbers a few times a second.
//
// A deadline fires late by up to one period, never early. Retransmission timeouts are 1 s by
// default and whole seconds when a client negotiates one (RFC 2349), so a period of a tenth of
// the default timeout changes nothing a client can notice.

/** Something with a deadline on the sweep: a transfer. */
export interface Deadlined {
  /** performance.now() value at or after which onDeadline is called. */
  readonly deadline: number;
  onDeadline(now: number): void;
}

export class DeadlineSweep {
  readonly #members = new Set<Deadlined>();
  readonly #periodMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(periodMs: number) {
    this.#periodMs = periodMs;
  }

  /** The clock deadlines are on (monotonic: a wall clock step must not fire or freeze them). */
  now(): number {
    return performance.now();
  }

  get size(): number {
    return this.#members.size;
  }

  add(member: Deadlined): void {
    this.#members.add(member);
    this.#timer ??= setInterval(() => this.#sweep(), this.#periodMs);
  }

  delete(member: Deadlined): void {
    this.#members.delete(member);
    if (this.#members.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  #sweep(): void {
    const now = performance.now();
    // A member that finishes in onDeadline deletes itself; a Set iterator skips deleted entries.
    for (const member of this.#members) {
      if (member.deadline <= now) member.onDeadline(now);
    }
  }
}

/** The sweep period for a default retransmission timeout: a tenth of it, within 10..100 ms. */
export function sweepPeriodFor(timeoutMs: number): number {
  return Math.min(100, Math.max(10, Math.floor(timeoutMs / 10)));
}
