/**
 * The in-process event bus: boot, image, machine and job events flow from the services that
 * see them to whoever listens (SSE and WebSocket clients, metrics). Publishing never waits on
 * a listener: every subscription has a bounded queue, and a consumer that falls behind loses
 * events (counted, and told so) or is disconnected, so one slow browser tab can neither stall
 * a DHCP reply nor grow the daemon's memory.
 */

export interface EventPayloads {
  session_started: {
    session_id: string;
    machine_id: number;
    target_id: number | null;
    client_ip: string | null;
  };
  session_stopped: { session_id: string; machine_id: number; status: string; reason?: string };
  image_uploaded: {
    image_id: number;
    name: string;
    format: string;
    size_bytes: number;
    status: string;
    job_id: number | null;
  };
  machine_discovered: { machine_id: number; mac_address: string; client_arch: number | null };
  machine_online: { machine_id: number; ip_address: string | null };
  machine_offline: { machine_id: number };
  job_progress: {
    job_id: number;
    type: string;
    status: string;
    progress: number;
    step: string | null;
    message: string | null;
  };
  system_alert: {
    level: "info" | "warning" | "critical";
    source: string;
    message: string;
    /** The stored alert (GET /api/alerts), when the alert is one. */
    alert_id?: number;
    machine_id?: number | null;
  };
  /** A machine's live state changed (pxe, ipxe, script_served, ..., see src/fleet/state.ts). */
  machine_state: {
    machine_id: number;
    state: string;
    previous: string;
    phase: string | null;
    session_id: string | null;
    reason: string | null;
  };
  /** The update cycle of an image: an update opened, committed or discarded, a rollback, a version deleted, a target reset, pinned, promoted, a writeback snapshot taken, restored or deleted. */
  image_version_changed: {
    image_id: number;
    action: string;
    current_version: number | null;
    version?: number;
    update_id?: number;
    machine_id?: number;
    target_id?: number;
    snapshot_id?: number;
  };
}

export type EventType = keyof EventPayloads;

export const EVENT_TYPES: readonly EventType[] = [
  "session_started",
  "session_stopped",
  "image_uploaded",
  "machine_discovered",
  "machine_online",
  "machine_offline",
  "job_progress",
  "system_alert",
  "machine_state",
  "image_version_changed",
];

/** One delivered event. `id` rises by one per publish, so a client can see gaps. */
export type BusEvent = {
  [K in EventType]: { id: number; type: K; at: string; payload: EventPayloads[K] };
}[EventType];

export type OverflowPolicy = "drop" | "disconnect";

export interface SubscribeOptions {
  /** Only these types are queued; all when absent. */
  types?: readonly EventType[];
  /** Further per-subscriber filter, e.g. a client user sees only its own machines. */
  filter?: (e: BusEvent) => boolean;
  /** Events held for a consumer that has not read them yet. */
  maxQueue?: number;
  /**
   * What happens when the queue is full: "drop" discards the new event and counts it (the
   * count is handed to the consumer with the next event it reads); "disconnect" ends the
   * subscription, so a stream client reconnects and resynchronises.
   */
  overflow?: OverflowPolicy;
}

export interface Delivery {
  event: BusEvent;
  /** Events this subscriber lost to overflow just before this one (a gap in the ids). */
  droppedBefore: number;
}

export interface Subscription extends AsyncIterable<Delivery> {
  /** Resolves with the next delivery, or undefined once the subscription has ended. */
  next(signal?: AbortSignal): Promise<Delivery | undefined>;
  close(): void;
  readonly closed: boolean;
  /** Why it ended: "closed" by its owner, "overflow" when disconnected for being slow. */
  readonly endReason: "closed" | "overflow" | undefined;
  readonly dropped: number;
  readonly queued: number;
}

export interface BusStats {
  published: number;
  subscribers: number;
  dropped: number;
  disconnected: number;
  listenerErrors: number;
}

type Listener = (e: BusEvent) => void;

export interface EventBusOptions {
  clock?: () => number;
  /** Told about a listener that threw; the bus itself never throws to a publisher. */
  onListenerError?: (err: unknown, e: BusEvent) => void;
  defaultMaxQueue?: number;
}

export class EventBus {
  #seq = 0;
  readonly #subs = new Set<SubscriptionImpl>();
  readonly #listeners = new Set<Listener>();
  readonly #clock: () => number;
  readonly #onListenerError: ((err: unknown, e: BusEvent) => void) | undefined;
  readonly #defaultMaxQueue: number;
  #stats = { published: 0, dropped: 0, disconnected: 0, listenerErrors: 0 };

  constructor(opts: EventBusOptions = {}) {
    this.#clock = opts.clock ?? Date.now;
    this.#onListenerError = opts.onListenerError;
    this.#defaultMaxQueue = opts.defaultMaxQueue ?? 1000;
  }

  publish<K extends EventType>(type: K, payload: EventPayloads[K]): BusEvent {
    const event = {
      id: ++this.#seq,
      type,
      at: new Date(this.#clock()).toISOString(),
      payload,
    } as BusEvent;
    this.#stats.published++;
    for (const l of this.#listeners) {
      try {
        l(event);
      } catch (err) {
        this.#stats.listenerErrors++;
        this.#onListenerError?.(err, event);
      }
    }
    for (const s of this.#subs) {
      const outcome = s.offer(event);
      if (outcome === "dropped") this.#stats.dropped++;
      else if (outcome === "disconnected") this.#stats.disconnected++;
    }
    return event;
  }

  /**
   * A synchronous listener, for in-process consumers that do O(1) work (metrics). It runs
   * inside publish(), so it must not block; an exception it throws is counted and reported,
   * never passed to the publisher.
   */
  on(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  subscribe(opts: SubscribeOptions = {}): Subscription {
    const sub = new SubscriptionImpl(
      opts.types ? new Set(opts.types) : undefined,
      opts.filter,
      Math.max(1, opts.maxQueue ?? this.#defaultMaxQueue),
      opts.overflow ?? "drop",
      () => this.#subs.delete(sub),
    );
    this.#subs.add(sub);
    return sub;
  }

  stats(): BusStats {
    return { ...this.#stats, subscribers: this.#subs.size };
  }

  /** Ends every subscription (daemon shutdown), so stream handlers return. */
  closeAll(): void {
    for (const s of [...this.#subs]) s.close();
  }
}

class SubscriptionImpl implements Subscription {
  readonly #queue: Delivery[] = [];
  #head = 0;
  #pendingDrops = 0;
  #dropped = 0;
  #waiter: ((d: Delivery | undefined) => void) | undefined;
  #endReason: "closed" | "overflow" | undefined;

  constructor(
    private readonly types: Set<EventType> | undefined,
    private readonly filter: ((e: BusEvent) => boolean) | undefined,
    private readonly maxQueue: number,
    private readonly overflow: OverflowPolicy,
    private readonly detach: () => void,
  ) {}

  get closed(): boolean {
    return this.#endReason !== undefined;
  }
  get endReason() {
    return this.#endReason;
  }
  get dropped(): number {
    return this.#dropped;
  }
  get queued(): number {
    return this.#queue.length - this.#head;
  }

  offer(event: BusEvent): "queued" | "delivered" | "skipped" | "dropped" | "disconnected" {
    if (this.closed) return "skipped";
    if (this.types && !this.types.has(event.type)) return "skipped";
    if (this.filter) {
      try {
        if (!this.filter(event)) return "skipped";
      } catch {
        return "skipped";
      }
    }
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w(this.#stamp(event));
      return "delivered";
    }
    if (this.queued >= this.maxQueue) {
      if (this.overflow === "disconnect") {
        this.#end("overflow");
        return "disconnected";
      }
      this.#pendingDrops++;
      this.#dropped++;
      return "dropped";
    }
    this.#queue.push(this.#stamp(event));
    return "queued";
  }

  /** The drops counted since the previous accepted event mark the gap just before this one. */
  #stamp(event: BusEvent): Delivery {
    const d = { event, droppedBefore: this.#pendingDrops };
    this.#pendingDrops = 0;
    return d;
  }

  next(signal?: AbortSignal): Promise<Delivery | undefined> {
    if (this.queued > 0) {
      const d = this.#queue[this.#head]!;
      this.#head++;
      // Compact now and then so a long-lived subscription's array does not only grow.
      if (this.#head > 256 && this.#head * 2 > this.#queue.length) {
        this.#queue.splice(0, this.#head);
        this.#head = 0;
      }
      return Promise.resolve(d);
    }
    if (this.closed || signal?.aborted) return Promise.resolve(undefined);
    if (this.#waiter) return Promise.reject(new Error("next() called again before it resolved"));
    return new Promise((resolve) => {
      const onAbort = () => {
        if (this.#waiter === settle) this.#waiter = undefined;
        resolve(undefined);
      };
      const settle = (d: Delivery | undefined) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(d);
      };
      this.#waiter = settle;
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  close(): void {
    this.#end("closed");
  }

  #end(reason: "closed" | "overflow"): void {
    if (this.#endReason) return;
    this.#endReason = reason;
    this.detach();
    // A disconnected consumer resynchronises anyway; dropping the queue frees its memory now.
    this.#queue.length = 0;
    this.#head = 0;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.(undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Delivery> {
    try {
      for (;;) {
        const d = await this.next();
        if (d === undefined) return;
        yield d;
      }
    } finally {
      this.close();
    }
  }
}
