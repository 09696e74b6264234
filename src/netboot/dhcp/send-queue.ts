// The proxy-DHCP's outgoing queue, one for all interfaces: replies leave one at a time,
// paced, and a full socket buffer (EAGAIN/ENOBUFS) is waited out instead of losing the
// reply (nodejs/node#24310).
import type { Logger } from "pino";

const SEND_RETRIES = 6;
// The kernel's (and so raw-socket's) wording of EAGAIN / ENOBUFS: the socket or device
// queue is full for a moment, which a short wait clears.
const TRANSIENT_SEND_ERROR = /temporarily unavailable|no buffer space/i;

/** The socket a job leaves by; `open` false once it is closed. */
export interface SendChannel {
  open: boolean;
  socket: {
    send(
      buf: Buffer,
      offset: number,
      length: number,
      address: string,
      cb: (err: Error | null, bytes: number) => void,
    ): unknown;
  };
}

export interface SendJob {
  channel: SendChannel;
  packet: Buffer;
  dstAddress: string;
  /** For the log line of a failed send. */
  label: string;
  resolve: (ok: boolean) => void;
}

export interface SendQueueOptions {
  /** Pause after `burst` back-to-back sends (see DhcpTransportOptions). */
  intervalMs: number;
  burst: number;
  /** Jobs waiting at most; push() refuses more (a flood must not grow memory). */
  maxQueued: number;
  log: Logger;
  /** Counted here as jobs finish. */
  stats: { sent: number; sendErrors: number; queueFull: number };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class SendQueue {
  private readonly queue: SendJob[] = [];
  private pumping = false;
  private drained: Promise<void> = Promise.resolve();
  private current: SendJob | undefined;
  private sentInBurst = 0;
  private fullLogged = false;

  constructor(private readonly o: SendQueueOptions) {}

  /** Queues a job; false (counted, logged once per episode) when the queue is full. */
  push(job: SendJob): boolean {
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
    if (!this.pumping) {
      this.pumping = true;
      this.drained = this.pump();
    }
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
    this.current?.resolve(false);
    for (const job of this.queue.splice(0)) job.resolve(false);
  }

  private async pump(): Promise<void> {
    for (;;) {
      this.current = this.queue.shift();
      if (!this.current) {
        this.fullLogged = false;
        // Cleared in the same tick the queue is seen empty, so a send() made from a
        // continuation of the last job starts a new pump instead of waiting forever.
        this.pumping = false;
        return;
      }
      const job = this.current;
      const err = await this.sendWithRetries(job);
      if (err) {
        this.o.stats.sendErrors++;
        this.o.log.warn({ err, datagram: job.label }, "DHCP transport: send failed");
        job.resolve(false);
      } else {
        this.o.stats.sent++;
        job.resolve(true);
      }
      this.sentInBurst++;
      if (this.queue.length === 0) this.sentInBurst = 0;
      else if (this.o.intervalMs > 0 && this.sentInBurst >= this.o.burst) {
        this.sentInBurst = 0;
        await sleep(this.o.intervalMs);
      }
    }
  }

  private async sendWithRetries(job: SendJob): Promise<Error | null> {
    let err: Error | null = null;
    for (let attempt = 0; attempt <= SEND_RETRIES; attempt++) {
      // raw-socket would quietly make a new, unbound socket if asked to send on a closed one.
      if (!job.channel.open) return new Error("socket closed");
      err = await new Promise<Error | null>((resolve) => {
        job.channel.socket.send(job.packet, 0, job.packet.length, job.dstAddress, (e) =>
          resolve(e),
        );
      });
      if (!err || !TRANSIENT_SEND_ERROR.test(err.message)) return err;
      await sleep(2 ** attempt);
    }
    return err;
  }
}
