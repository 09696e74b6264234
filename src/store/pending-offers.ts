import type { Db } from "./db.js";

/** A proxy-DHCP offer that went out to a known machine, as `SessionsRepo.recordOffers` writes it. */
export interface Offer {
  machine_id: number;
  server_ip: string;
  boot_method: string;
  at: string;
}

/** Who queued an offer, told once it is written (or could not be). Called on a later tick. */
export interface OfferSink {
  written(machineIds: readonly number[]): void;
  failed(err: unknown, offers: { kept: number; dropped: number }): void;
}

/**
 * How long an offer may wait to be written. A transaction costs ~0.1 ms of CPU however few
 * rows it writes, a row ~0.02 ms (2-core VM): offers of one turn (a handful with 32 in
 * flight) cost ~0.05 ms each, those of 20 ms of a boot storm (~100) ~0.02 ms. Another
 * process (the `bootfleet` command) sees an offer at most this much later; this process
 * sees it at once (every read of the rows it writes writes it first).
 */
export const OFFER_WRITE_DELAY_MS = 20;
/** Written at once past this many (the reply's turn pays for a batch this big). */
const WRITE_AT = 1024;
/** After a failed write (the database busy or full), retried this much later. */
const RETRY_MS = 1000;
/** Kept for retries at most: beyond, the oldest are dropped and reported. */
const KEEP_AT_MOST = 50_000;

interface Queued {
  offer: Offer;
  sink: OfferSink | undefined;
}

/**
 * Offers written behind the replies: the proxy-DHCP queues each one after its reply went
 * out, and they are written together in one transaction, OFFER_WRITE_DELAY_MS later. The
 * store calls `flush` before every statement that reads what an offer writes (boot
 * sessions, machines' boot counters) and before every `Store.transaction`, so a reader in
 * this process never sees the store without them; `close` writes them at a clean stop.
 */
export class PendingOffers {
  #queue: Queued[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing = false;

  constructor(
    private readonly db: Db,
    private readonly write: (offers: readonly Offer[]) => void,
  ) {}

  get size(): number {
    return this.#queue.length;
  }

  add(offer: Offer, sink?: OfferSink): void {
    this.#queue.push({ offer, sink });
    if (this.#queue.length >= WRITE_AT) this.flush();
    else this.#schedule(OFFER_WRITE_DELAY_MS);
  }

  /**
   * Writes what waits, in one transaction. Never throws: a failed batch is kept and retried
   * (its sinks are told), and the reader that asked goes on with the store as it is.
   * Returns whether nothing waits any more.
   */
  flush(): boolean {
    // Its own statements read sessions too (which asks for a flush): they are the write.
    if (this.#writing || this.#queue.length === 0) return true;
    // Inside another's transaction its rollback would take the offers with it:
    // Store.transaction writes them before it begins.
    if (this.db.inTransaction || !this.db.open) return false;
    const batch = this.#queue;
    this.#queue = [];
    this.#writing = true;
    try {
      this.write(batch.map((q) => q.offer));
    } catch (err) {
      this.#keep(batch, err);
      return false;
    } finally {
      this.#writing = false;
    }
    if (this.#queue.length === 0) this.#cancelTimer();
    this.#tell(batch, (sink, ids) => sink.written(ids));
    return this.#queue.length === 0;
  }

  /** A clean stop: what waits is written now, and no timer is left behind. */
  close(): void {
    this.flush();
    this.#cancelTimer();
  }

  #schedule(ms: number): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush();
    }, ms);
  }

  #cancelTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** A failed write: the batch goes back in front of what came since, bounded. */
  #keep(batch: Queued[], err: unknown): void {
    const all = [...batch, ...this.#queue];
    const dropped = Math.max(0, all.length - KEEP_AT_MOST);
    this.#queue = all.slice(dropped);
    this.#cancelTimer();
    this.#schedule(RETRY_MS);
    const counts = { kept: this.#queue.length, dropped };
    this.#tell(batch, (sink) => sink.failed(err, counts));
  }

  /** Each sink once per batch, with its machines, on a later tick: never inside a reader's statement. */
  #tell(batch: Queued[], call: (sink: OfferSink, machineIds: number[]) => void): void {
    const bySink = new Map<OfferSink, Set<number>>();
    for (const { offer, sink } of batch) {
      if (!sink) continue;
      const ids = bySink.get(sink);
      if (ids) ids.add(offer.machine_id);
      else bySink.set(sink, new Set([offer.machine_id]));
    }
    if (bySink.size === 0) return;
    setImmediate(() => {
      // After a stop's flush the store may be closed by now: no one is left to tell.
      if (!this.db.open) return;
      for (const [sink, ids] of bySink) call(sink, [...ids]);
    });
  }
}
