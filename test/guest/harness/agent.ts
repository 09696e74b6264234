import { randomInt } from "node:crypto";
import { connect, type Socket } from "node:net";

/**
 * A client for the QEMU guest agent (qemu-ga) on the host end of its virtio-serial port,
 * which QEMU exposes as a unix socket. The protocol is one JSON object per line each way,
 * one command at a time. The channel outlives the agent: across a guest reboot the host
 * socket stays open, and bytes written while no agent listens are delivered to the next
 * one. So after connecting, after any time-out and after a reboot the client re-syncs with
 * guest-sync-delimited and a fresh random id, dropping every reply that is not that id's.
 */

export class AgentError extends Error {
  constructor(
    message: string,
    readonly errorClass?: string,
  ) {
    super(message);
    this.name = "AgentError";
  }
}

type Waiter = {
  /** Returns true when the reply was this waiter's (sync waiters skip others). */
  take(reply: Record<string, unknown>): boolean;
  fail(err: Error): void;
};

export class GuestAgent {
  #socket: Socket | undefined;
  #buf = Buffer.alloc(0);
  #waiter: Waiter | undefined;
  /** Until a sync has answered, bytes before the agent's 0xFF marker are stale. */
  #awaitingMarker = false;
  #synced = false;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(readonly socketPath: string) {}

  /** Connects (once; again if the socket closed), retrying until QEMU has made it. */
  async connect(timeoutMs: number): Promise<void> {
    if (this.#socket && !this.#socket.destroyed) return;
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline && !this.#closed) {
      try {
        this.#socket = await openSocket(this.socketPath);
        this.#buf = Buffer.alloc(0);
        this.#synced = false;
        this.#socket.on("data", (d: Buffer) => this.#onData(d));
        this.#socket.on("close", () => {
          this.#synced = false;
          this.#waiter?.fail(new AgentError("guest agent socket closed"));
        });
        this.#socket.on("error", () => {
          // "close" follows and fails the waiter; nothing else to do here.
        });
        return;
      } catch (err) {
        last = err;
        await sleep(100);
      }
    }
    throw new AgentError(`cannot connect to ${this.socketPath}: ${String(last)}`);
  }

  /**
   * One guest-sync-delimited round: resolves when the agent echoes this id, rejects after
   * timeoutMs (the agent is not up yet, or is going down). The 0xFF sent first resets the
   * agent's JSON parser in case a previous request was cut off half-way.
   */
  sync(timeoutMs: number): Promise<void> {
    return this.#serial(() => this.#sync(timeoutMs));
  }

  /** Runs one command and returns its "return" value; bounded by timeoutMs. */
  command<T = unknown>(
    execute: string,
    args?: Record<string, unknown>,
    timeoutMs = 10_000,
  ): Promise<T> {
    return this.#serial(async () => {
      if (!this.#synced) await this.#sync(Math.min(timeoutMs, 5_000));
      return (await this.#request(execute, args, timeoutMs, false)) as T;
    });
  }

  /** Sends a command whose success has no reply (guest-shutdown); does not wait. */
  fire(execute: string, args?: Record<string, unknown>): Promise<void> {
    return this.#serial(async () => {
      if (!this.#synced) await this.#sync(5_000);
      this.#write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
      // The agent goes away without answering; whatever comes back later is stale.
      this.#synced = false;
    });
  }

  /** Forget the current sync, so the next command re-syncs (e.g. after a reboot). */
  invalidate(): void {
    this.#synced = false;
  }

  close(): void {
    this.#closed = true;
    this.#waiter?.fail(new AgentError("guest agent client closed"));
    this.#socket?.destroy();
    this.#socket = undefined;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #sync(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 47);
    this.#awaitingMarker = true;
    this.#write(Buffer.from([0xff]));
    const reply = await this.#request("guest-sync-delimited", { id }, timeoutMs, id);
    if (reply !== id) throw new AgentError(`guest-sync answered ${String(reply)}, not ${id}`);
    this.#synced = true;
  }

  #request(
    execute: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number,
    syncId: number | false,
  ): Promise<unknown> {
    if (!this.#socket || this.#socket.destroyed) {
      return Promise.reject(new AgentError("guest agent socket is not connected"));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        // A late reply would be taken for the next command's: re-sync first.
        this.#synced = false;
        reject(new AgentError(`${execute}: no answer from the guest agent in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = {
        take: (reply) => {
          if (syncId !== false && !("return" in reply && reply.return === syncId)) return false;
          clearTimeout(timer);
          this.#waiter = undefined;
          if ("error" in reply) {
            const e = reply.error as { class?: string; desc?: string };
            reject(new AgentError(`${execute}: ${e.desc ?? JSON.stringify(e)}`, e.class));
          } else {
            resolve(reply.return);
          }
          return true;
        },
        fail: (err) => {
          clearTimeout(timer);
          this.#waiter = undefined;
          reject(err);
        },
      };
      this.#write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    });
  }

  #write(data: string | Buffer): void {
    this.#socket?.write(data);
  }

  #onData(d: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, d]);
    if (this.#awaitingMarker) {
      const at = this.#buf.indexOf(0xff);
      if (at < 0) {
        // Everything before the marker is stale; keep nothing but the search position.
        this.#buf = Buffer.alloc(0);
        return;
      }
      this.#buf = this.#buf.subarray(at + 1);
      this.#awaitingMarker = false;
    }
    for (;;) {
      const nl = this.#buf.indexOf(0x0a);
      if (nl < 0) return;
      const line = this.#buf.subarray(0, nl).toString("utf8").trim();
      this.#buf = this.#buf.subarray(nl + 1);
      if (!line) continue;
      let reply: unknown;
      try {
        reply = JSON.parse(line);
      } catch {
        continue; // half a line from an agent that went away mid-reply
      }
      if (reply && typeof reply === "object" && this.#waiter) {
        this.#waiter.take(reply as Record<string, unknown>);
      }
    }
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once("connect", () => {
      s.removeAllListeners("error");
      resolve(s);
    });
    s.once("error", (err) => {
      s.destroy();
      reject(err);
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
