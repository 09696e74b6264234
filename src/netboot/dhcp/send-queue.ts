// The proxy-DHCP's outgoing path, one for all interfaces: a reply leaves at once, in the
// same turn that decided it, while the pacing budget allows; otherwise it waits in a
// bounded queue. A full socket buffer (EAGAIN/ENOBUFS) is waited out instead of losing the
// reply (nodejs/node#24310).
import type { Logger } from "pino";

const SEND_RETRIES = 6;
// The kernel's (and so raw-socket's) wording of EAGAIN / ENOBUFS: the socket or device
// queue is full for a moment, which a short wait clears.
const TRANSIENT_SEND_ERROR = /temporarily unavailable|no buffer space/i;

/** The socket a job leaves by; `open` false once it is closed. */
export interface SendChannel {
  open: boolean;
  /**
   * Hands one packet to the kernel now (one sendto), throwing the socket's error. The
   * queue only sends this way: a send that waits for the socket to poll writable costs an
   * event-loop turn per reply, and with raw-socket it also waits behind every readable
   * event (its poll callback reports either, readable first).
   */
  sendNow(packet: Buffer, address: string): void;
}

export interface SendJob {
  channel: SendChannel;
  packet: Buffer;
  dstAddress: string;
  /** For the log line of a failed send. */
  label: () => string;
  resolve: (ok: boolean) => void;
}

export interface SendQueueOptions {
  /**
   * Pacing: at most `burst` replies back to back, then `burst` more per `intervalMs` on
   * average (0: no pacing). A token bucket on the clock, not a timer per burst: a timer
   * fires late on a busy host, and paying that lateness after every few replies capped
   * the rate far below the budget (bench/dhcp).
   */
  intervalMs: number;
  burst: number;
  /** Jobs waiting at most; push() refuses more (a flood must not grow memory). */
  maxQueued: number;
  log: Logger;
  /** Counted here as jobs finish. */
  stats: { sent: number; sendErrors: number; queueFull: number };
  /** Milliseconds, monotonic; a test's clock. */
  now?: () => number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class SendQueue {
  private readonly queue: SendJob[] = [];
  private pumping = false;
  private drained: Promise<void> = Promise.resolve();
  private current: SendJob | undefined;
  private fullLogged = false;
  /** Set by drain(): what was reported as not sent must not leave after all. */
  private drainedOut = false;
  private tokens: number;
  private refilledAt: number;
  private readonly now: () => number;

  constructor(private readonly o: SendQueueOptions) {
    this.now = o.now ?? (() => performance.now());
    this.tokens = o.burst;
    this.refilledAt = this.now();
  }

  /**
   * Sends the job now when nothing waits and the budget allows (resolved before this
   * returns), else queues it; false (counted, logged once per episode) when the queue is
   * full.
   */
  push(job: SendJob): boolean {
    if (!this.pumping && this.take()) {
      this.sendNowOrQueue(job);
      return true;
    }
    if (this.queue.length >= this.o.maxQueued) {
      if (!this.fullLogged) {
        this.fullLogged = true;
        this.o.log.warn(
          { waiting: this.queue.length },
          "DHCP transport: send queue full; refusing replies",
        );
      }
      this.o.stats.queueFull++;
      this.o.stats.sendErrors++;
      return false;
    }
    this.queue.push(job);
    this.startPump();
    return true;
  }

  /** Waits up to `timeoutMs` for the queue to empty; what is left is reported as not sent. */
  async drain(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.drained,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    this.drainedOut = true;
    this.current?.resolve(false);
    for (const job of this.queue.splice(0)) job.resolve(false);
  }

  /** One token of the pacing budget, if there is one now. */
  private take(): boolean {
    if (this.o.intervalMs <= 0) return true;
    const now = this.now();
    const rate = this.o.burst / this.o.intervalMs;
    this.tokens = Math.min(this.o.burst, this.tokens + (now - this.refilledAt) * rate);
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until the next token (at least 1: Node's timers resolve to 1 ms). */
  private untilToken(): number {
    const rate = this.o.burst / this.o.intervalMs;
    return Math.max(1, Math.ceil((1 - this.tokens) / rate));
  }

  /** The common case: one sendto, in this turn. A transient error hands it to the pump. */
  private sendNowOrQueue(job: SendJob): void {
    const err = this.attempt(job);
    if (err && TRANSIENT_SEND_ERROR.test(err.message)) {
      // The device queue is full: wait it out behind whatever else is waiting.
      this.queue.unshift(job);
      this.startPump(true);
      return;
    }
    this.finish(job, err);
  }

  private attempt(job: SendJob): Error | null {
    // raw-socket would quietly make a new, unbound socket if asked to send on a closed one.
    if (!job.channel.open) return new Error("socket closed");
    try {
      job.channel.sendNow(job.packet, job.dstAddress);
      return null;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  private finish(job: SendJob, err: Error | null): void {
    if (err) {
      this.o.stats.sendErrors++;
      this.o.log.warn({ err, datagram: job.label() }, "DHCP transport: send failed");
      job.resolve(false);
    } else {
      this.o.stats.sent++;
      job.resolve(true);
    }
  }

  /** `backOff`: the socket just said EAGAIN, so the first attempt waits a moment. */
  private startPump(backOff = false): void {
    if (this.pumping) return;
    this.pumping = true;
    this.drained = this.pump(backOff);
  }

  private async pump(backOff: boolean): Promise<void> {
    if (backOff) await sleep(1);
    for (;;) {
      const job = this.queue.shift();
      if (!job) {
        this.fullLogged = false;
        // Cleared in the same tick the queue is seen empty, so a send() made from a
        // continuation of the last job starts a new pump instead of waiting forever.
        this.pumping = false;
        this.current = undefined;
        return;
      }
      this.current = job;
      while (!this.take()) {
        await sleep(this.untilToken());
        if (this.drainedOut) return;
      }
      const err = await this.sendWithRetries(job);
      if (this.drainedOut) return;
      this.finish(job, err);
      this.current = undefined;
    }
  }

  private async sendWithRetries(job: SendJob): Promise<Error | null> {
    let err: Error | null = null;
    for (let attempt = 0; attempt <= SEND_RETRIES; attempt++) {
      err = this.attempt(job);
      if (!err || !TRANSIENT_SEND_ERROR.test(err.message)) return err;
      await sleep(2 ** attempt);
      if (this.drainedOut) return err;
    }
    return err;
  }
}
