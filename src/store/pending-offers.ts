import type { Db } from "./db.js";

/** A proxy-DHCP offer that went out to a known machine, as `SessionsRepo.recordOffers` writes it. */
export interface Offer {
  machine_id: number;
  server_ip: string;
  boot_method: string;
  at: string;
}

/**
 * A known machine the proxy-DHCP heard from: its last_seen (and first_seen if unset) and the
 * client's latest arch, UUID and vendor class, as `MachinesRepo.writeSeen` writes them (a
 * null field leaves the column as it is).
 */
export interface Seen {
  machine_id: number;
  at: string;
  client_arch: number | null;
  client_uuid: string | null;
  vendor_class: string | null;
}

/**
 * A boot's transfer of iPXE (TFTP, or HTTP for UEFI HTTP boot), as `SessionsRepo.recordTransfer`
 * stamps it on the machine's current session (`tftp_done_at` and the transfer's fields).
 */
export interface Transfer {
  machine_id: number;
  at: string;
  file: string;
  bytes: number;
  duration_ms: number;
}

/** What the boot timeline queues, in the order it happened: offers and transfers. */
export type TimelineEntry = { offer: Offer } | { transfer: Transfer };

/** Who queued an offer, told once it is written (or could not be). Called on a later tick. */
export interface OfferSink {
  written(machineIds: readonly number[]): void;
  failed(err: unknown, offers: { kept: number; dropped: number }): void;
}

/**
 * How long an offer may wait to be written. A transaction costs ~0.1 ms of CPU however few
 * rows it writes, a row ~0.02 ms (2-core VM): offers of one turn (a handful with 32 in
 * flight) cost ~0.05 ms each, those of 20 ms of a boot storm (~100) ~0.02 ms. Another
 * process (the `bootfleet` command) sees an offer or a last_seen at most this much later;
 * this process sees it at once (every read of the rows it writes writes it first).
 */
export const OFFER_WRITE_DELAY_MS = 20;
/** Written at once past this many (the reply's turn pays for a batch this big). */
const WRITE_AT = 1024;
/** After a failed write (the database busy or full), retried this much later. */
const RETRY_MS = 1000;
/** Kept for retries at most: beyond, the oldest are dropped and reported. */
const KEEP_AT_MOST = 50_000;

interface Queued {
  entry: TimelineEntry;
  machineId: number;
  sink: OfferSink | undefined;
}

/**
 * The proxy-DHCP's writes, made behind its replies: the offers (queued after each reply
 * went out) and the last_seen of the known machines it heard from (queued as each request
 * is decided: a machine last seen long ago, every PC of a morning's boot storm, was an
 * UPDATE in its own transaction before its reply). They are written together in one
 * transaction, OFFER_WRITE_DELAY_MS later. The store calls `flush` before every statement
 * that reads what they write (boot sessions, machines) and before every
 * `Store.transaction`, so a reader in this process never sees the store without them;
 * `close` writes them at a clean stop.
 */
export class PendingOffers {
  #queue: Queued[] = [];
  /** By machine: a second request of the same machine before the write replaces the first. */
  #seen = new Map<number, Seen>();
  #timer: NodeJS.Timeout | undefined;
  #writing = false;

  constructor(
    private readonly db: Db,
    private readonly write: (entries: readonly TimelineEntry[], seen: readonly Seen[]) => void,
  ) {}

  get size(): number {
    return this.#queue.length + this.#seen.size;
  }

  add(offer: Offer, sink?: OfferSink): void {
    this.#queue.push({ entry: { offer }, machineId: offer.machine_id, sink });
    this.#queued();
  }

  /**
   * A boot's iPXE transfer, written with the offers and in order with them (a transfer
   * stamps the session its boot's offer opened). In a 500-PC storm a transfer was a
   * transaction of its own that also wrote the offers queued before it.
   */
  addTransfer(transfer: Transfer, sink?: OfferSink): void {
    this.#queue.push({ entry: { transfer }, machineId: transfer.machine_id, sink });
    this.#queued();
  }

  /** A known machine was heard from: its last_seen and client fields, written with the offers. */
  addSeen(seen: Seen): void {
    this.#seen.set(seen.machine_id, merged(this.#seen.get(seen.machine_id), seen));
    this.#queued();
  }

  /**
   * The last_seen queued for a machine, not written yet: the DHCP path's own look-up reads
   * the row without writing the queue first, and would otherwise queue it again.
   */
  seenAt(machineId: number): string | undefined {
    return this.#seen.get(machineId)?.at;
  }

  #queued(): void {
    if (this.size >= WRITE_AT) this.flush();
    else this.#schedule(OFFER_WRITE_DELAY_MS);
  }

  /**
   * Writes what waits, in one transaction. Never throws: a failed batch is kept and retried
   * (its sinks are told), and the reader that asked goes on with the store as it is.
   * Returns whether nothing waits any more.
   */
  flush(): boolean {
    // Its own statements read sessions too (which asks for a flush): they are the write.
    if (this.#writing || this.size === 0) return true;
    // Inside another's transaction its rollback would take the offers with it:
    // Store.transaction writes them before it begins.
    if (this.db.inTransaction || !this.db.open) return false;
    const batch = this.#queue;
    const seen = this.#seen;
    this.#queue = [];
    this.#seen = new Map();
    this.#writing = true;
    try {
      this.write(
        batch.map((q) => q.entry),
        [...seen.values()],
      );
    } catch (err) {
      this.#keep(batch, seen, err);
      return false;
    } finally {
      this.#writing = false;
    }
    if (this.size === 0) this.#cancelTimer();
    this.#tell(batch, (sink, ids) => sink.written(ids));
    return this.size === 0;
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

  /**
   * A failed write: the batch goes back in front of what came since, bounded (the machines
   * seen are bounded by the machines there are: a MAC the store does not know queues none).
   * Sightings have no sink: they are retried with the offers, and their failure is told to
   * the offers' sinks when there are offers in the batch.
   */
  #keep(batch: Queued[], seen: Map<number, Seen>, err: unknown): void {
    for (const [id, s] of this.#seen) seen.set(id, merged(seen.get(id), s));
    this.#seen = seen;
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
    for (const { machineId, sink } of batch) {
      if (!sink) continue;
      const ids = bySink.get(sink);
      if (ids) ids.add(machineId);
      else bySink.set(sink, new Set([machineId]));
    }
    if (bySink.size === 0) return;
    setImmediate(() => {
      // After a stop's flush the store may be closed by now: no one is left to tell.
      if (!this.db.open) return;
      for (const [sink, ids] of bySink) call(sink, [...ids]);
    });
  }
}

/** A machine seen again before its last sighting was written: the newer fields win, an unknown one keeps the older. */
function merged(older: Seen | undefined, newer: Seen): Seen {
  if (!older) return newer;
  return {
    machine_id: newer.machine_id,
    at: newer.at,
    client_arch: newer.client_arch ?? older.client_arch,
    client_uuid: newer.client_uuid ?? older.client_uuid,
    vendor_class: newer.vendor_class ?? older.vendor_class,
  };
}
