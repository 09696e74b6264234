// One read transfer on its own ephemeral socket (the server's TID, RFC 1350), sending windows of
// blocks (RFC 7440; windowsize 1 is plain lock-step RFC 1350).
//
// Retransmission is driven by the timer only. A duplicate ACK never triggers a resend: answering
// every duplicate with data is the "sorcerer's apprentice" bug (RFC 1123 4.2.3.1), where each
// late ACK doubles the traffic until the transfer drowns.
//
// Until the client has answered once, its address is only a claim (UDP sources are easily
// forged): the first packet is resent at most `firstRetries` times, so a forged request
// makes the server send a victim a few packets, not a stream. And a transfer has a whole
// lifetime, so a client that ACKs just before every timeout cannot hold its slot forever.
//
// The per-block path is kept lean, because with many lock-step clients it runs once per block:
// a small shared file is sent from its ready packets (data-packets.ts) without an await, an ACK
// is read from its four bytes without building a parsed packet, and the deadlines are numbers
// on the server's one sweep (deadlines.ts), not a timer per transfer refreshed on every ACK.

import type { RemoteInfo, Socket } from "node:dgram";
import type { Logger } from "pino";
import type { DataPackets } from "./data-packets.js";
import type { Deadlined, DeadlineSweep } from "./deadlines.js";
import type { FileSource } from "./filestore.js";
import {
  ERR_NOT_DEFINED,
  encodeDataHeader,
  encodeError,
  OP_ACK,
  OP_ERROR,
  parseTftpPacket,
} from "./packet.js";

export interface TransferResult {
  ok: boolean;
  /** File bytes the client acknowledged. */
  bytes: number;
  error?: string;
  /** TFTP error code, when the transfer ended with an ERROR packet either way. */
  errorCode?: number;
  /** True when the client ended it in answer to our OACK (UEFI's tsize probe does this). */
  abortedAtOack?: boolean;
}

export interface TransferParams {
  socket: Socket;
  clientAddress: string;
  clientPort: number;
  source: FileSource;
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  /** Retransmissions of the same window before the transfer is dropped. */
  retries: number;
  /** Retransmissions of the first packet (OACK or DATA 1) before the client has answered. */
  firstRetries: number;
  /** The whole transfer ends (ERROR to the client) after this long. */
  maxLifetimeMs: number;
  /** Sent first when options were accepted; the client answers with ACK 0. */
  oack: Buffer | undefined;
  /** The server's sweep that calls onDeadline for retransmissions and the lifetime. */
  deadlines: DeadlineSweep;
  log: Logger;
  onDone(result: TransferResult): void;
}

export class Transfer implements Deadlined {
  readonly #p: TransferParams;
  readonly #totalBlocks: number;
  /** Ready packets of the file when the store keeps them; otherwise blocks come from read(). */
  readonly #packets: DataPackets | undefined;
  #state: "oack" | "data" | "done" = "data";
  /** Highest block (absolute, not wrapped at 65536) the client has acknowledged in order. */
  #acked = 0;
  /** Highest block (absolute) put on the wire so far. */
  #sent = 0;
  #attempts = 0;
  #generation = 0;
  /** When the whole transfer ends, whatever the client does. */
  #endsAt = Number.POSITIVE_INFINITY;
  #deadline = Number.POSITIVE_INFINITY;
  /** The client has acknowledged something: its address is real. */
  #heard = false;

  constructor(params: TransferParams) {
    this.#p = params;
    // The last block is shorter than blksize, so a file that is an exact multiple ends with an
    // empty block.
    this.#totalBlocks = Math.floor(params.source.size / params.blksize) + 1;
    this.#packets = params.source.packets?.(params.blksize);
    params.socket.on("message", (msg, rinfo) => this.#onMessage(msg, rinfo));
    params.socket.on("error", (err) => {
      params.log.debug({ err }, "tftp transfer socket error");
    });
  }

  get clientKey(): string {
    return `${this.#p.clientAddress}|${this.#p.clientPort}`;
  }

  get deadline(): number {
    return this.#deadline;
  }

  /** Called by the sweep once the deadline has passed. */
  onDeadline(now: number): void {
    if (now >= this.#endsAt) this.#expire();
    else this.#onTimeout();
  }

  start(): void {
    const { deadlines } = this.#p;
    this.#endsAt = deadlines.now() + this.#p.maxLifetimeMs;
    this.#deadline = this.#endsAt;
    deadlines.add(this);
    if (this.#p.oack !== undefined) {
      this.#state = "oack";
      this.#sendOack();
    } else {
      this.#state = "data";
      this.#sendWindow();
    }
  }

  /** Ends the transfer now, telling the client why. */
  abort(message: string): void {
    if (this.#state === "done") return;
    this.#finish(
      { ok: false, bytes: this.#ackedBytes(), error: message, errorCode: ERR_NOT_DEFINED },
      encodeError(ERR_NOT_DEFINED, message),
    );
  }

  #ackedBytes(): number {
    return Math.min(this.#acked * this.#p.blksize, this.#p.source.size);
  }

  // No per-send callback: it costs an allocation per packet, and send errors reach the socket's
  // "error" listener anyway. Loss is handled by the retransmission deadline. No address either:
  // the socket is connected to the client (server.ts).
  #send(buf: Buffer | Buffer[]): void {
    this.#p.socket.send(buf);
  }

  /** The current window (or OACK) is resent after timeoutMs without an answer. */
  #arm(): void {
    const resendAt = this.#p.deadlines.now() + this.#p.timeoutMs;
    this.#deadline = Math.min(resendAt, this.#endsAt);
  }

  #sendOack(): void {
    this.#send(this.#p.oack!);
    this.#arm();
  }

  #sendWindow(): void {
    const first = this.#acked + 1;
    const last = Math.min(this.#acked + this.#p.windowsize, this.#totalBlocks);
    const packets = this.#packets;
    if (packets === undefined) {
      void this.#readWindow(first, last);
      return;
    }
    for (let block = first; block <= last; block++) this.#send(packets.packet(block));
    if (last > this.#sent) this.#sent = last;
    this.#arm();
  }

  /** A window from source.read(): big files on a shared handle, unshared or tiny-block ones. */
  async #readWindow(first: number, last: number): Promise<void> {
    const generation = ++this.#generation;
    const { blksize, source } = this.#p;
    const start = (first - 1) * blksize;
    const end = Math.min(last * blksize, source.size);
    // Armed before the read so a read that never completes still ends in a timeout.
    this.#arm();
    let bytes: Buffer;
    try {
      bytes = await source.read(start, end - start);
    } catch (err) {
      if (this.#state === "done") return;
      this.#p.log.warn({ err }, "tftp read failed");
      this.#finish(
        { ok: false, bytes: this.#ackedBytes(), error: "read error", errorCode: ERR_NOT_DEFINED },
        encodeError(ERR_NOT_DEFINED, "read error"),
      );
      return;
    }
    // An ACK or a timeout that arrived during the read started a newer window.
    if (generation !== this.#generation || this.#state !== "data") return;
    for (let block = first; block <= last; block++) {
      const from = (block - 1) * blksize - start;
      this.#send([
        encodeDataHeader(block),
        bytes.subarray(from, Math.min(from + blksize, bytes.length)),
      ]);
    }
    if (last > this.#sent) this.#sent = last;
    this.#arm();
  }

  #expire(): void {
    if (this.#state === "done") return;
    const seconds = Math.round(this.#p.maxLifetimeMs / 1000);
    this.#finish(
      {
        ok: false,
        bytes: this.#ackedBytes(),
        error: `transfer exceeded its lifetime of ${seconds} s`,
        errorCode: ERR_NOT_DEFINED,
      },
      encodeError(ERR_NOT_DEFINED, `Transfer took longer than ${seconds} s`),
    );
  }

  #onTimeout(): void {
    if (this.#state === "done") return;
    this.#attempts++;
    const retries = this.#heard ? this.#p.retries : Math.min(this.#p.retries, this.#p.firstRetries);
    if (this.#attempts > retries) {
      const error = `timed out after ${retries} retransmissions`;
      this.#finish(
        { ok: false, bytes: this.#ackedBytes(), error },
        encodeError(ERR_NOT_DEFINED, "timeout"),
      );
      return;
    }
    if (this.#state === "oack") this.#sendOack();
    else this.#sendWindow();
  }

  #onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#state === "done") return;
    // The connected socket only receives the client's datagrams; this check is for one that
    // reached the socket between bind and connect (nobody knew its port yet, but it costs two
    // comparisons). A foreign TID gets no TFTP error from us: see bindTransferSocket.
    if (rinfo.port !== this.#p.clientPort || rinfo.address !== this.#p.clientAddress) return;
    if (msg.length < 4) return;
    const op = (msg[0]! << 8) | msg[1]!;
    if (op === OP_ACK) this.#onAck((msg[2]! << 8) | msg[3]!);
    else if (op === OP_ERROR) this.#onError(msg);
  }

  #onError(msg: Buffer): void {
    const parsed = parseTftpPacket(msg);
    if (!parsed.ok) return;
    const packet = parsed.packet;
    if (packet.op === "ERROR") {
      const atOack = this.#state === "oack";
      this.#finish({
        ok: false,
        bytes: this.#ackedBytes(),
        error: `client error ${packet.code}: ${packet.message}`,
        errorCode: packet.code,
        abortedAtOack: atOack,
      });
    }
  }

  /** `wire` is the block number as sent, wrapped at 65536. */
  #onAck(wire: number): void {
    if (this.#state === "oack") {
      if (wire !== 0) return;
      this.#heard = true;
      this.#state = "data";
      this.#attempts = 0;
      this.#sendWindow();
      return;
    }
    // Block numbers wrap at 65536; the ACK can only be for a block between the last one acked and
    // the last one sent, which identifies it uniquely as long as the window is below 65536.
    const delta = (wire - (this.#acked & 0xffff) + 0x10000) & 0xffff;
    const block = this.#acked + delta;
    if (delta === 0 || block > this.#sent) return; // duplicate or bogus: the timer handles loss
    this.#acked = block;
    this.#heard = true;
    this.#attempts = 0;
    if (this.#acked >= this.#totalBlocks) {
      this.#finish({ ok: true, bytes: this.#p.source.size });
      return;
    }
    // RFC 7440: an ACK inside the window means the rest was lost; the next window starts after it.
    this.#sendWindow();
  }

  /** `lastPacket` is sent before the socket closes (closing first would drop it unsent). */
  #finish(result: TransferResult, lastPacket?: Buffer): void {
    if (this.#state === "done") return;
    this.#state = "done";
    this.#generation++;
    this.#p.deadlines.delete(this);
    this.#p.source.release();
    const { socket } = this.#p;
    const close = () => {
      try {
        socket.close();
      } catch {
        // already closed
      }
    };
    if (lastPacket === undefined) close();
    else socket.send(lastPacket, close);
    this.#p.onDone(result);
  }
}
