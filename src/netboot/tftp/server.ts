// Read-only TFTP server: RRQ only (RFC 1350) with options (RFC 2347, 2348, 2349, 7440). It hands
// PXE firmware the iPXE binary; everything after that goes over HTTP.

import { createSocket, type RemoteInfo, type Socket, type SocketType } from "node:dgram";
import { realpath } from "node:fs/promises";
import { isIP } from "node:net";
import type { Logger } from "pino";
import { Admission, DEFAULT_MAX_TRANSFERS_PER_ADDRESS, type Refusal } from "./admission.js";
import { DeadlineSweep, sweepPeriodFor } from "./deadlines.js";
import { type FileSource, FileStore, type FileStoreStats } from "./filestore.js";
import { negotiateOptions } from "./options.js";
import {
  ERR_ACCESS_VIOLATION,
  ERR_FILE_NOT_FOUND,
  ERR_NOT_DEFINED,
  encodeError,
  encodeOack,
  OP_RRQ,
  OP_WRQ,
  parseTftpRequest,
  type TftpRequest,
} from "./packet.js";
import { type TftpTransferEvent, TransferReport } from "./report.js";
import { DEFAULT_MAX_NAME_LENGTH, normaliseAliases, resolveTftpPath } from "./resolve.js";
import { Transfer } from "./transfer.js";

export type { TftpTransferEvent } from "./report.js";

export interface TftpServerOptions {
  /** Folder served; names resolve inside it only. */
  root: string;
  /** Name (as requested, leading `/` ignored) → absolute path, e.g. undionly.kpxe → /usr/lib/ipxe/undionly.kpxe. */
  aliases?: Readonly<Record<string, string>> | ReadonlyMap<string, string>;
  /**
   * Addresses to listen on (the netboot interfaces'); each transfer's socket binds to the
   * address its request came to. Default 0.0.0.0 (every address).
   */
  addresses?: readonly string[];
  /** Default 69; 0 picks a free port. */
  port?: number;
  /** Cap on blksize, from the interface MTU (maxBlksizeForMtu). Default 1468 (MTU 1500). */
  maxBlksize?: number;
  /** Cap on windowsize (RFC 7440). Default 32. */
  maxWindowsize?: number;
  /**
   * Concurrent transfers. A request beyond it is left unanswered (the client resends it after its
   * timeout), not refused: an ERROR ends a PXE ROM's boot. Default 64.
   */
  maxTransfers?: number;
  /** Retransmission timeout when the client did not negotiate one. Default 1000 ms. */
  timeoutMs?: number;
  /** Retransmissions of one window before a stalled transfer is dropped. Default 5. */
  retries?: number;
  /** Retransmissions of the first packet before the client has answered once. Default 2. */
  firstRetries?: number;
  /** Longest a transfer may run, whatever the client does. Default 120 000 ms. */
  maxLifetimeMs?: number;
  /** Concurrent transfers from one source address. Default 4. */
  maxTransfersPerAddress?: number;
  /** How long close() lets transfers in flight finish before aborting them. Default 5000 ms. */
  closeTimeoutMs?: number;
  /** Files up to this size are served from a shared in-memory copy. Default 16 MiB. */
  maxCachedFileBytes?: number;
  /** Memory kept for idle cached files. Default 64 MiB. */
  cacheMaxBytes?: number;
  /** false: every transfer reads the file itself (to measure what sharing saves). Default true. */
  shareFiles?: boolean;
  /** Longest accepted name in bytes. Default 255. */
  maxNameLength?: number;
  log: Logger;
  onTransfer?: (event: TftpTransferEvent) => void;
  /** Each request left unanswered because maxTransfers were running (for /metrics). */
  onBusy?: () => void;
  /** Clock for durationMs. */
  now?: () => number;
}

export interface TftpServerStats extends FileStoreStats {
  activeTransfers: number;
  /** Requests left unanswered since listen() because maxTransfers were running (the client resends). */
  unansweredBusy: number;
}

export interface TftpServer {
  /** Binds every address; answers the first one's address and the (shared) port. */
  listen(): Promise<{ address: string; port: number }>;
  /** Stops accepting requests, lets transfers in flight finish within closeTimeoutMs, aborts the rest. */
  close(): Promise<void>;
  stats(): TftpServerStats;
}

function socketType(address: string): SocketType {
  return isIP(address) === 6 ? "udp6" : "udp4";
}

/**
 * The server: one listening socket takes requests, admission.ts decides which may start,
 * and each admitted one becomes a Transfer on its own socket (transfer.ts).
 */
export function createTftpServer(opts: TftpServerOptions): TftpServer {
  return new ReadOnlyTftpServer(opts);
}

class ReadOnlyTftpServer implements TftpServer {
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly addresses: readonly string[];
  private readonly admission: Admission;
  private readonly report: TransferReport;
  private readonly files: RequestedFiles;
  private readonly transferSettings: TransferSettings;
  private sockets: Socket[] = [];
  /** Requests left unanswered because every slot was taken (admission.ts). */
  private unansweredBusy = 0;

  constructor(private readonly opts: TftpServerOptions) {
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.addresses = opts.addresses?.length ? opts.addresses : ["0.0.0.0"];
    this.admission = new Admission(
      opts.maxTransfers ?? 64,
      opts.maxTransfersPerAddress ?? DEFAULT_MAX_TRANSFERS_PER_ADDRESS,
    );
    this.report = new TransferReport(this.log, this.now, opts.onTransfer);
    this.files = {
      realRoot: "",
      aliases: normaliseAliases(opts.aliases),
      maxNameLength: opts.maxNameLength ?? DEFAULT_MAX_NAME_LENGTH,
      store: new FileStore({
        maxCachedFileBytes: opts.maxCachedFileBytes ?? 16 * 1024 * 1024,
        cacheMaxBytes: opts.cacheMaxBytes ?? 64 * 1024 * 1024,
        share: opts.shareFiles ?? true,
      }),
    };
    const defaultTimeoutMs = opts.timeoutMs ?? 1000;
    this.transferSettings = {
      limits: { maxBlksize: opts.maxBlksize ?? 1468, maxWindowsize: opts.maxWindowsize ?? 32 },
      defaultTimeoutMs,
      retries: opts.retries ?? 5,
      firstRetries: opts.firstRetries ?? 2,
      maxLifetimeMs: opts.maxLifetimeMs ?? 120_000,
      deadlines: new DeadlineSweep(sweepPeriodFor(defaultTimeoutMs)),
    };
  }

  async listen(): Promise<{ address: string; port: number }> {
    if (this.sockets.length > 0) throw new Error("tftp server already listening");
    this.files.realRoot = await realpath(this.opts.root);
    // Port 0 picks a free port on the first address; the others use the same one.
    let port = this.opts.port ?? 69;
    try {
      for (const address of this.addresses) {
        const socket = await bindListeningSocket(address, port, this.log, (msg, rinfo) =>
          this.onRequest(msg, rinfo, address, socket),
        );
        this.sockets.push(socket);
        port = socket.address().port;
      }
    } catch (err) {
      for (const s of this.sockets.splice(0)) s.close();
      throw err;
    }
    this.log.info(
      { addresses: this.addresses, port, root: this.files.realRoot },
      "tftp server listening",
    );
    return { address: this.addresses[0]!, port };
  }

  async close(): Promise<void> {
    if (this.admission.isClosing) return;
    const sockets = this.sockets.splice(0);
    const drained = this.admission.close(this.opts.closeTimeoutMs ?? 5000);
    await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    await drained;
  }

  stats(): TftpServerStats {
    return {
      ...this.files.store.stats(),
      activeTransfers: this.admission.activeTransfers,
      unansweredBusy: this.unansweredBusy,
    };
  }

  private onRequest(msg: Buffer, rinfo: RemoteInfo, local: string, socket: Socket): void {
    if (this.admission.isClosing) return;
    // Only requests are answered on the listening port: answering a stray ERROR or ACK with an
    // ERROR could ping-pong forever with another confused host.
    const opcode = msg.length >= 2 ? msg.readUInt16BE(0) : -1;
    if (opcode !== OP_RRQ && opcode !== OP_WRQ) return;
    const started = this.now();
    const parsed = parseTftpRequest(msg);
    if (!parsed.ok) {
      reply(socket, rinfo, parsed.errorCode, "Malformed request");
      this.report.malformed(rinfo, parsed.reason);
      return;
    }
    const request = parsed.request;
    const client = `${rinfo.address}|${rinfo.port}`;
    const verdict = this.admission.admit(request, client);
    if (!verdict.admit) {
      if ("refusal" in verdict) this.refuse(socket, request, rinfo, started, verdict.refusal);
      else if (verdict.unanswered === "busy") {
        this.unansweredBusy++;
        this.opts.onBusy?.();
        this.report.busy(request, rinfo, this.admission.maxTransfers);
      }
      return;
    }
    void this.startTransfer(request, rinfo, client, started, local, socket).finally(() =>
      this.admission.settled(client),
    );
  }

  private async startTransfer(
    request: TftpRequest,
    rinfo: RemoteInfo,
    client: string,
    started: number,
    local: string,
    socket: Socket,
  ): Promise<void> {
    let handedOver = false;
    try {
      const opened = await openRequested(request, this.files);
      if (!opened.ok) return this.refuse(socket, request, rinfo, started, opened.refusal);
      const { source, path } = opened;
      if (this.admission.isClosing) {
        source.release();
        reply(socket, rinfo, ERR_NOT_DEFINED, "Server shutting down");
        return;
      }
      let tsocket: Socket;
      try {
        tsocket = await bindTransferSocket(local, rinfo.address, rinfo.port);
      } catch (err) {
        source.release();
        return this.refuse(socket, request, rinfo, started, {
          code: ERR_NOT_DEFINED,
          message: "Server error",
          reason: `no transfer socket: ${String(err)}`,
          level: "warn",
        });
      }
      const settings = this.transferSettings;
      const transfer = newTransfer(request, rinfo, source, tsocket, settings, this.log, (r) => {
        this.admission.end(client);
        this.report.finished(request, rinfo, path, started, r);
      });
      this.admission.started(client, transfer);
      handedOver = true;
      transfer.start();
    } catch (err) {
      // Nothing above is expected to throw; if it does, the client still gets an answer.
      this.log.error({ err }, "tftp request failed");
      reply(socket, rinfo, ERR_NOT_DEFINED, "Server error");
    } finally {
      if (!handedOver) this.admission.end(client);
    }
  }

  private refuse(
    socket: Socket,
    request: TftpRequest,
    rinfo: RemoteInfo,
    started: number,
    r: Refusal,
  ): void {
    reply(socket, rinfo, r.code, r.message);
    this.report.refused(request, rinfo, started, r);
  }
}

function reply(socket: Socket, rinfo: RemoteInfo, code: number, message: string): void {
  try {
    socket.send(encodeError(code, message), rinfo.port, rinfo.address, () => {});
  } catch {
    // The listening socket closed meanwhile (shutdown): nobody to answer from.
  }
}

interface RequestedFiles {
  realRoot: string;
  aliases: ReturnType<typeof normaliseAliases>;
  maxNameLength: number;
  store: FileStore;
}

interface TransferSettings {
  limits: { maxBlksize: number; maxWindowsize: number };
  defaultTimeoutMs: number;
  retries: number;
  firstRetries: number;
  maxLifetimeMs: number;
  /** Retransmission and lifetime deadlines of every transfer of this server. */
  deadlines: DeadlineSweep;
}

/** The file a request names, opened; or why the client is refused it. */
async function openRequested(
  request: TftpRequest,
  files: RequestedFiles,
): Promise<{ ok: true; path: string; source: FileSource } | { ok: false; refusal: Refusal }> {
  const resolved = await resolveTftpPath(request.filename, files);
  if (!resolved.ok) {
    const denied = resolved.errorCode === ERR_ACCESS_VIOLATION;
    return {
      ok: false,
      refusal: {
        code: resolved.errorCode,
        message: denied ? "Access violation" : "File not found",
        reason: resolved.reason,
        level: resolved.refused ? "warn" : "info",
      },
    };
  }
  const mode = request.mode === "netascii" ? "netascii" : "octet";
  const opened = await files.store.open(resolved.path, mode, resolved.stats);
  if (!opened.ok) {
    const message =
      opened.errorCode === ERR_ACCESS_VIOLATION
        ? "Access violation"
        : opened.errorCode === ERR_FILE_NOT_FOUND
          ? "File not found"
          : opened.reason;
    return {
      ok: false,
      refusal: { code: opened.errorCode, message, reason: opened.reason, level: "info" },
    };
  }
  return { ok: true, path: resolved.path, source: opened.source };
}

function newTransfer(
  request: TftpRequest,
  rinfo: RemoteInfo,
  source: FileSource,
  socket: Socket,
  settings: TransferSettings,
  log: Logger,
  onDone: ConstructorParameters<typeof Transfer>[0]["onDone"],
): Transfer {
  const negotiated = negotiateOptions(request.options, source.size, settings.limits);
  return new Transfer({
    socket,
    clientAddress: rinfo.address,
    clientPort: rinfo.port,
    source,
    blksize: negotiated.blksize,
    windowsize: negotiated.windowsize,
    timeoutMs: negotiated.timeoutMs ?? settings.defaultTimeoutMs,
    retries: settings.retries,
    firstRetries: settings.firstRetries,
    maxLifetimeMs: settings.maxLifetimeMs,
    deadlines: settings.deadlines,
    oack: negotiated.oack.length > 0 ? encodeOack(negotiated.oack) : undefined,
    log,
    onDone,
  });
}

async function bindListeningSocket(
  address: string,
  port: number,
  log: Logger,
  onRequest: (msg: Buffer, rinfo: RemoteInfo) => void,
): Promise<Socket> {
  const s = createSocket({ type: socketType(address) });
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.bind({ address, port, exclusive: true }, () => {
      s.off("error", reject);
      resolve();
    });
  });
  s.on("error", (err) => log.error({ err }, "tftp socket error"));
  s.on("message", (msg, rinfo) => {
    try {
      onRequest(msg, rinfo);
    } catch (err) {
      log.error({ err }, "tftp request handler threw");
    }
  });
  return s;
}

/**
 * A transfer's own socket (the server's TID), bound to the address the request came to and
 * connected to the client's address and port. Connected, dgram sends without resolving an
 * address per packet and the kernel keeps the route, and the kernel itself drops datagrams from
 * any other source (RFC 1350's transfer-ID rule; it answers them with ICMP port unreachable).
 */
function bindTransferSocket(
  address: string,
  clientAddress: string,
  clientPort: number,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: socketType(address) });
    const onError = (err: Error) => {
      s.close();
      reject(err);
    };
    s.once("error", onError);
    s.bind({ address, port: 0, exclusive: true }, () => {
      s.connect(clientPort, clientAddress, () => {
        s.off("error", onError);
        resolve(s);
      });
    });
  });
}
