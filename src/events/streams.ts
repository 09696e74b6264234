import type { BusEvent, EventBus, EventType, Subscription } from "./bus.js";

export interface EventStreamsOptions {
  bus: EventBus;
  /**
   * How often an idle stream gets a keep-alive (SSE comment, WebSocket ping) and its
   * token is checked again, so a logout or an expired token ends the stream.
   */
  heartbeatMs?: number;
  /**
   * Events held for a stream whose client does not read them; one more and the stream is
   * disconnected (the client reconnects and resumes from Last-Event-ID).
   */
  maxQueue?: number;
  /** Recent events kept for GET /api/events and for resuming a stream (Last-Event-ID). */
  replay?: number;
  /**
   * Streams (SSE and WebSocket together) one user may hold open. Each costs a
   * subscription, a queue and a socket; a browser needs one or two.
   */
  maxPerUser?: number;
}

/** Streams one user may hold open, by default. */
export const DEFAULT_MAX_STREAMS_PER_USER = 8;

/** A stream's place in its user's allowance; release() is idempotent. */
export interface StreamSlot {
  release(): void;
}

/**
 * The API side of the event bus: every SSE and WebSocket stream subscribes here, so the
 * daemon can end them all at shutdown (its drain must not wait on streams that never
 * end), and recent events are kept in a bounded ring for clients that resume or poll.
 */
export class EventStreams {
  readonly bus: EventBus;
  readonly heartbeatMs: number;
  readonly maxQueue: number;
  readonly maxPerUser: number;
  readonly #perUser = new Map<number, number>();
  readonly #replay: number;
  readonly #recent: BusEvent[] = [];
  readonly #subs = new Set<Subscription>();
  readonly #detach: () => void;
  #closed = false;

  constructor(opts: EventStreamsOptions) {
    this.bus = opts.bus;
    this.heartbeatMs = opts.heartbeatMs ?? 15_000;
    this.maxQueue = opts.maxQueue ?? 256;
    this.maxPerUser = opts.maxPerUser ?? DEFAULT_MAX_STREAMS_PER_USER;
    this.#replay = Math.max(0, opts.replay ?? 500);
    this.#detach = opts.bus.on((e) => {
      if (this.#replay === 0) return;
      this.#recent.push(e);
      if (this.#recent.length > this.#replay)
        this.#recent.splice(0, this.#recent.length - this.#replay);
    });
  }

  /** A stream's subscription: slow consumers are disconnected, never buffered without bound. */
  subscribe(filter: (e: BusEvent) => boolean, types?: readonly EventType[]): Subscription {
    const sub = this.bus.subscribe({
      filter,
      maxQueue: this.maxQueue,
      overflow: "disconnect",
      ...(types ? { types } : {}),
    });
    if (this.#closed) sub.close();
    else this.#subs.add(sub);
    return sub;
  }

  /**
   * Takes one of the user's stream slots before a stream opens; undefined when the user
   * already holds maxPerUser streams (the route answers 429).
   */
  reserve(userId: number): StreamSlot | undefined {
    const held = this.#perUser.get(userId) ?? 0;
    if (held >= this.maxPerUser) return undefined;
    this.#perUser.set(userId, held + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const left = (this.#perUser.get(userId) ?? 1) - 1;
        if (left > 0) this.#perUser.set(userId, left);
        else this.#perUser.delete(userId);
      },
    };
  }

  /** Streams the user holds open (reserved slots). */
  heldBy(userId: number): number {
    return this.#perUser.get(userId) ?? 0;
  }

  /** Forget a subscription that ended (the stream's own cleanup). */
  release(sub: Subscription): void {
    sub.close();
    this.#subs.delete(sub);
  }

  /** Events after `afterId` still in the ring, oldest first. */
  recent(afterId: number, filter: (e: BusEvent) => boolean, types?: readonly EventType[]) {
    return this.#recent.filter(
      (e) => e.id > afterId && (!types || types.includes(e.type)) && filter(e),
    );
  }

  get open(): number {
    return this.#subs.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Daemon shutdown: every stream ends now and new ones end at once. */
  closeAll(): void {
    this.#closed = true;
    for (const s of this.#subs) s.close();
    this.#subs.clear();
    this.#detach();
  }
}
