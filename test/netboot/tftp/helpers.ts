// Test support for the TFTP server: a raw client that builds and reads packets byte by byte from
// RFC 1350/2347/7440 on its own (it does not use the server's codec, so a codec bug cannot hide
// itself), and a fixture that starts a server on a loopback high port with a temporary root.

import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { mkdtemp, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import {
  createTftpServer,
  type TftpServer,
  type TftpServerOptions,
  type TftpTransferEvent,
} from "../../../src/netboot/tftp/index.js";

/** The part of a tap test the fixtures need. */
export interface HasTeardown {
  teardown(fn: () => unknown): void;
}

export interface Packet {
  buf: Buffer;
  rinfo: RemoteInfo;
}

/** RFC 1350 RRQ (opcode 1) or WRQ (2): name NUL mode NUL, then RFC 2347 name NUL value NUL pairs. */
export function request(
  filename: string | Buffer,
  mode = "octet",
  options: Array<[string, string]> = [],
  opcode = 1,
): Buffer {
  const parts: Buffer[] = [Buffer.from([0, opcode])];
  parts.push(Buffer.isBuffer(filename) ? filename : Buffer.from(filename), Buffer.from([0]));
  parts.push(Buffer.from(mode), Buffer.from([0]));
  for (const [k, v] of options)
    parts.push(Buffer.from(k), Buffer.from([0]), Buffer.from(v), Buffer.from([0]));
  return Buffer.concat(parts);
}

export function ack(block: number): Buffer {
  return Buffer.from([0, 4, (block >> 8) & 0xff, block & 0xff]);
}

export function errorPacket(code: number, message: string): Buffer {
  return Buffer.concat([Buffer.from([0, 5, 0, code]), Buffer.from(message), Buffer.from([0])]);
}

export function opcodeOf(buf: Buffer): number {
  return buf.length >= 2 ? (buf[0]! << 8) | buf[1]! : -1;
}

export function blockOf(buf: Buffer): number {
  return (buf[2]! << 8) | buf[3]!;
}

export function errorCodeOf(buf: Buffer): number {
  return blockOf(buf);
}

export function errorMessageOf(buf: Buffer): string {
  const end = buf.indexOf(0, 4);
  return buf.subarray(4, end < 0 ? undefined : end).toString("latin1");
}

/** OACK (opcode 6) body as a map, names lower-cased. */
export function oackOptions(buf: Buffer): Map<string, string> {
  const fields = buf.subarray(2).toString("latin1").split("\0");
  fields.pop(); // text after the final NUL
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) out.set(fields[i]!.toLowerCase(), fields[i + 1]!);
  return out;
}

export class RawClient {
  readonly socket: Socket;
  readonly #queue: Packet[] = [];
  #waiter: ((p: Packet | undefined) => void) | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("message", (buf, rinfo) => {
      const w = this.#waiter;
      if (w !== undefined) {
        this.#waiter = undefined;
        w({ buf, rinfo });
      } else {
        this.#queue.push({ buf, rinfo });
      }
    });
  }

  static async open(): Promise<RawClient> {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, "127.0.0.1", () => resolve());
    });
    socket.setRecvBufferSize(4 * 1024 * 1024);
    return new RawClient(socket);
  }

  get port(): number {
    return this.socket.address().port;
  }

  send(buf: Buffer, port: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.socket.send(buf, port, "127.0.0.1", (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Next packet, or undefined when none arrives within `timeoutMs`. */
  next(timeoutMs: number): Promise<Packet | undefined> {
    const queued = this.#queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        resolve(undefined);
      }, timeoutMs);
      this.#waiter = (p) => {
        clearTimeout(timer);
        resolve(p);
      };
    });
  }

  /** Every packet that arrives within `ms`. */
  async collect(ms: number): Promise<Packet[]> {
    const out: Packet[] = [];
    const deadline = Date.now() + ms;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return out;
      const p = await this.next(left);
      if (p === undefined) return out;
      out.push(p);
    }
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

export interface FetchOptions {
  mode?: string;
  options?: Array<[string, string]>;
  /** Per-packet wait before the client gives up. */
  timeoutMs?: number;
  /** Whole-transfer bound, so a server that resends forever fails the test instead of hanging it. */
  deadlineMs?: number;
}

export interface FetchResult {
  data: Buffer;
  oack: Map<string, string> | undefined;
  /** Block numbers as they came off the wire (wrapped at 65536), in order of arrival. */
  blocks: number[];
}

/**
 * A well-behaved RFC 1350 + 7440 reader: ACKs each window's last block (or the last in-order one
 * when a block is missing), accepts block numbers that wrap past 65535 to 0.
 */
export async function fetchFile(
  serverPort: number,
  name: string,
  opts: FetchOptions = {},
): Promise<FetchResult> {
  const client = await RawClient.open();
  try {
    const timeoutMs = opts.timeoutMs ?? 3000;
    const deadline = Date.now() + (opts.deadlineMs ?? 30_000);
    await client.send(request(name, opts.mode ?? "octet", opts.options ?? []), serverPort);
    let blksize = 512;
    let windowsize = 1;
    let oack: Map<string, string> | undefined;
    let tid: number | undefined;
    const chunks: Buffer[] = [];
    const blocks: number[] = [];
    let expected = 1; // absolute block number
    let sinceAck = 0;
    for (;;) {
      if (Date.now() > deadline)
        throw new Error(`transfer not done by its deadline (at block ${expected})`);
      const p = await client.next(timeoutMs);
      if (p === undefined)
        throw new Error(`no packet from server within ${timeoutMs} ms (at block ${expected})`);
      if (tid === undefined) tid = p.rinfo.port;
      if (p.rinfo.port !== tid) continue;
      const op = opcodeOf(p.buf);
      if (op === 5) throw new Error(`server error ${errorCodeOf(p.buf)}: ${errorMessageOf(p.buf)}`);
      if (op === 6) {
        oack = oackOptions(p.buf);
        blksize = Number(oack.get("blksize") ?? 512);
        windowsize = Number(oack.get("windowsize") ?? 1);
        await client.send(ack(0), tid);
        continue;
      }
      if (op !== 3) throw new Error(`unexpected opcode ${op}`);
      const block = blockOf(p.buf);
      blocks.push(block);
      if (block !== (expected & 0xffff)) {
        // Out of order or a resend: ack the last in-order block so the server restarts after it.
        await client.send(ack((expected - 1) & 0xffff), tid);
        sinceAck = 0;
        continue;
      }
      const payload = p.buf.subarray(4);
      chunks.push(Buffer.from(payload));
      expected++;
      sinceAck++;
      const last = payload.length < blksize;
      if (last || sinceAck >= windowsize) {
        await client.send(ack(block), tid);
        sinceAck = 0;
      }
      if (last) return { data: Buffer.concat(chunks), oack, blocks };
    }
  } finally {
    client.close();
  }
}

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface Fixture {
  server: TftpServer;
  port: number;
  root: string;
  logs: LogLine[];
  events: TftpTransferEvent[];
  /** Resolves with the next transfer event (bounded by `timeoutMs`). */
  nextEvent(timeoutMs?: number): Promise<TftpTransferEvent>;
}

export async function makeTempDir(t: HasTeardown, tag: string): Promise<string> {
  const dir = await realpath(await mkdtemp(join(tmpdir(), `bf-tftp-${tag}-${process.pid}-`)));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Starts a server on 127.0.0.1, a free port, with a temporary root; closed in teardown. */
export async function startServer(
  t: HasTeardown,
  overrides: Partial<TftpServerOptions> = {},
): Promise<Fixture> {
  const root = overrides.root ?? (await makeTempDir(t, "root"));
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split("\n"))
        if (line) logs.push(JSON.parse(line) as LogLine);
      cb();
    },
  });
  const events: TftpTransferEvent[] = [];
  const waiters: Array<(e: TftpTransferEvent) => void> = [];
  const server = createTftpServer({
    address: "127.0.0.1",
    port: 0,
    // Tests that leave a transfer hanging on purpose should not wait 5 s in teardown.
    closeTimeoutMs: 200,
    log: pino({ level: "debug" }, sink),
    onTransfer: (e) => {
      events.push(e);
      waiters.shift()?.(e);
    },
    ...overrides,
    root,
  });
  const { port } = await server.listen();
  t.teardown(() => server.close());
  let consumed = 0;
  return {
    server,
    port,
    root,
    logs,
    events,
    nextEvent(timeoutMs = 10_000) {
      const ready = events[consumed];
      if (ready !== undefined) {
        consumed++;
        return Promise.resolve(ready);
      }
      return new Promise((resolve, reject) => {
        const waiter = (e: TftpTransferEvent) => {
          clearTimeout(timer);
          consumed++;
          resolve(e);
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error("no transfer event in time"));
        }, timeoutMs);
        waiters.push(waiter);
      });
    },
  };
}

/** Polls `cond` until it holds or `timeoutMs` passes; returns whether it held. */
export async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
