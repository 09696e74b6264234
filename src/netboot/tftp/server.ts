// Read-only TFTP server: RRQ only (RFC 1350) with options (RFC 2347, 2348, 2349, 7440). It hands
// PXE firmware the iPXE binary; everything after that goes over HTTP.

import { createSocket, type RemoteInfo, type Socket, type SocketType } from "node:dgram";
import { type LookupOneOptions, lookup } from "node:dns";
import { realpath } from "node:fs/promises";
import { isIP } from "node:net";
import type { Logger } from "pino";
import { createLogLimiter, type LogLimiter } from "../log-limiter.js";
import { FileStore, type FileStoreStats } from "./filestore.js";
import { negotiateOptions } from "./options.js";
import {
  ERR_ACCESS_VIOLATION,
  ERR_FILE_NOT_FOUND,
  ERR_ILLEGAL_OPERATION,
  ERR_NOT_DEFINED,
  ERR_OPTION_REFUSED,
  encodeError,
  encodeOack,
  OP_RRQ,
  OP_WRQ,
  parseTftpRequest,
  type TftpRequest,
} from "./packet.js";
import { DEFAULT_MAX_NAME_LENGTH, normaliseAliases, resolveTftpPath } from "./resolve.js";
import { Transfer, type TransferResult } from "./transfer.js";

export interface TftpTransferEvent {
  /** The name the client asked for, as received. */
  file: string;
  /** The file served, when the name resolved to one. */
  path?: string;
  /** File bytes acknowledged by the client. */
  bytes: number;
  durationMs: number;
  clientAddress: string;
  clientPort: number;
  ok: boolean;
  error?: string;
  /** TFTP error code sent or received, when the transfer ended with one. */
  errorCode?: number;
  /**
   * The client asked only for options and ended with error 8 at the OACK: normal UEFI behaviour
   * (it asks for tsize, aborts, then asks again for real), not a failed boot.
   */
  sizeProbe?: boolean;
}

export interface TftpServerOptions {
  /** Folder served; names resolve inside it only. */
  root: string;
  /** Name (as requested, leading `/` ignored) → absolute path, e.g. undionly.kpxe → /usr/lib/ipxe/undionly.kpxe. */
  aliases?: Readonly<Record<string, string>> | ReadonlyMap<string, string>;
  /** Address to listen on; transfer sockets bind to it too. Default 0.0.0.0. */
  address?: string;
  /** Default 69; 0 picks a free port. */
  port?: number;
  /** Cap on blksize, from the interface MTU (maxBlksizeForMtu). Default 1468 (MTU 1500). */
  maxBlksize?: number;
  /** Cap on windowsize (RFC 7440). Default 32. */
  maxWindowsize?: number;
  /** Concurrent transfers; requests beyond it get an error. Default 64. */
  maxTransfers?: number;
  /** Retransmission timeout when the client did not negotiate one. Default 1000 ms. */
  timeoutMs?: number;
  /** Retransmissions of one window before a stalled transfer is dropped. Default 5. */
  retries?: number;
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
  /** Clock for durationMs. */
  now?: () => number;
}

export interface TftpServerStats extends FileStoreStats {
  activeTransfers: number;
}

export interface TftpServer {
  listen(): Promise<{ address: string; port: number }>;
  /** Stops accepting requests, lets transfers in flight finish within closeTimeoutMs, aborts the rest. */
  close(): Promise<void>;
  stats(): TftpServerStats;
}

function socketType(address: string): SocketType {
  return isIP(address) === 6 ? "udp6" : "udp4";
}

// dgram resolves the destination of every send through dns.lookup, which for an IP literal still
// defers the send by a tick; transfer sockets only ever send to literal client addresses.
function literalLookup(
  hostname: string,
  options: LookupOneOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const family = isIP(hostname);
  if (family !== 0) callback(null, hostname, family);
  else lookup(hostname, options, callback);
}

export function createTftpServer(opts: TftpServerOptions): TftpServer {
  const log = opts.log;
  const now = opts.now ?? Date.now;
  const address = opts.address ?? "0.0.0.0";
  const port = opts.port ?? 69;
  const maxTransfers = opts.maxTransfers ?? 64;
  const limits = { maxBlksize: opts.maxBlksize ?? 1468, maxWindowsize: opts.maxWindowsize ?? 32 };
  const defaultTimeoutMs = opts.timeoutMs ?? 1000;
  const retries = opts.retries ?? 5;
  const closeTimeoutMs = opts.closeTimeoutMs ?? 5000;
  const maxNameLength = opts.maxNameLength ?? DEFAULT_MAX_NAME_LENGTH;
  const aliases = normaliseAliases(opts.aliases);
  const store = new FileStore({
    maxCachedFileBytes: opts.maxCachedFileBytes ?? 16 * 1024 * 1024,
    cacheMaxBytes: opts.cacheMaxBytes ?? 64 * 1024 * 1024,
    share: opts.shareFiles ?? true,
  });
  // One budget per kind of line, so a flood of bad requests cannot also hide transfer failures.
  const refusedLimiter = createLogLimiter({ max: 20, intervalMs: 10_000, now });
  const failedLimiter = createLogLimiter({ max: 20, intervalMs: 10_000, now });
  const doneLimiter = createLogLimiter({ max: 100, intervalMs: 10_000, now });

  let socket: Socket | undefined;
  let realRoot = "";
  let closing = false;
  /** Requests being resolved plus running transfers: both count against maxTransfers. */
  let inFlight = 0;
  const transfers = new Map<string, Transfer>(); // key: client address|port
  const pending = new Set<string>();
  let drained: (() => void) | undefined;

  function limitedLog(
    limiter: LogLimiter,
    level: "debug" | "info" | "warn",
    fields: Record<string, unknown>,
    msg: string,
  ): void {
    if (!log.isLevelEnabled(level)) return;
    const { allowed, suppressed } = limiter.take();
    if (!allowed) return;
    log[level](suppressed > 0 ? { ...fields, suppressedLines: suppressed } : fields, msg);
  }

  function emit(event: TftpTransferEvent): void {
    if (opts.onTransfer === undefined) return;
    try {
      opts.onTransfer(event);
    } catch (err) {
      log.error({ err }, "tftp onTransfer callback threw");
    }
  }

  function reply(rinfo: RemoteInfo, code: number, message: string): void {
    socket?.send(encodeError(code, message), rinfo.port, rinfo.address, () => {});
  }

  function release(): void {
    inFlight--;
    if (closing && inFlight === 0) drained?.();
  }

  function refuse(
    request: TftpRequest,
    rinfo: RemoteInfo,
    started: number,
    code: number,
    message: string,
    reason: string,
    level: "info" | "warn",
  ): void {
    reply(rinfo, code, message);
    limitedLog(
      refusedLimiter,
      level,
      { client: rinfo.address, port: rinfo.port, file: request.filename, reason, errorCode: code },
      "tftp request refused",
    );
    emit({
      file: request.filename,
      bytes: 0,
      durationMs: now() - started,
      clientAddress: rinfo.address,
      clientPort: rinfo.port,
      ok: false,
      error: reason,
      errorCode: code,
    });
  }

  function onRequest(msg: Buffer, rinfo: RemoteInfo): void {
    if (closing) return;
    // Only requests are answered on the listening port: answering a stray ERROR or ACK with an
    // ERROR could ping-pong forever with another confused host.
    const opcode = msg.length >= 2 ? msg.readUInt16BE(0) : -1;
    if (opcode !== OP_RRQ && opcode !== OP_WRQ) return;
    const started = now();
    const parsed = parseTftpRequest(msg);
    if (!parsed.ok) {
      reply(rinfo, parsed.errorCode, "Malformed request");
      limitedLog(
        refusedLimiter,
        "info",
        { client: rinfo.address, port: rinfo.port, reason: parsed.reason },
        "tftp malformed request",
      );
      return;
    }
    const request = parsed.request;
    if (request.op === "WRQ") {
      refuse(
        request,
        rinfo,
        started,
        ERR_ACCESS_VIOLATION,
        "Access violation: read-only server",
        "write request",
        "info",
      );
      return;
    }
    if (request.mode === "mail") {
      refuse(
        request,
        rinfo,
        started,
        ERR_ILLEGAL_OPERATION,
        "Mail mode not supported",
        "mail mode",
        "info",
      );
      return;
    }
    const key = `${rinfo.address}|${rinfo.port}`;
    // The client resent its request because our first answer is slow or lost: the transfer
    // already under way answers it with its own retransmission.
    if (transfers.has(key) || pending.has(key)) return;
    if (inFlight >= maxTransfers) {
      refuse(
        request,
        rinfo,
        started,
        ERR_NOT_DEFINED,
        `Server busy: ${maxTransfers} transfers running, retry later`,
        "too many concurrent transfers",
        "warn",
      );
      return;
    }
    inFlight++;
    pending.add(key);
    void startTransfer(request, rinfo, key, started).finally(() => pending.delete(key));
  }

  async function startTransfer(
    request: TftpRequest,
    rinfo: RemoteInfo,
    key: string,
    started: number,
  ): Promise<void> {
    let handedOver = false;
    try {
      const resolved = await resolveTftpPath(request.filename, {
        realRoot,
        aliases,
        maxNameLength,
      });
      if (!resolved.ok) {
        refuse(
          request,
          rinfo,
          started,
          resolved.errorCode,
          resolved.errorCode === ERR_ACCESS_VIOLATION ? "Access violation" : "File not found",
          resolved.reason,
          resolved.refused ? "warn" : "info",
        );
        return;
      }
      const mode = request.mode === "netascii" ? "netascii" : "octet";
      const opened = await store.open(resolved.path, mode);
      if (!opened.ok) {
        refuse(
          request,
          rinfo,
          started,
          opened.errorCode,
          opened.errorCode === ERR_ACCESS_VIOLATION
            ? "Access violation"
            : opened.errorCode === ERR_FILE_NOT_FOUND
              ? "File not found"
              : opened.reason,
          opened.reason,
          "info",
        );
        return;
      }
      const source = opened.source;
      if (closing) {
        source.release();
        reply(rinfo, ERR_NOT_DEFINED, "Server shutting down");
        return;
      }
      const negotiated = negotiateOptions(request.options, source.size, limits);
      let tsocket: Socket;
      try {
        tsocket = await bindTransferSocket();
      } catch (err) {
        source.release();
        refuse(
          request,
          rinfo,
          started,
          ERR_NOT_DEFINED,
          "Server error",
          `no transfer socket: ${String(err)}`,
          "warn",
        );
        return;
      }
      const hasOack = negotiated.oack.length > 0;
      const transfer = new Transfer({
        socket: tsocket,
        clientAddress: rinfo.address,
        clientPort: rinfo.port,
        source,
        blksize: negotiated.blksize,
        windowsize: negotiated.windowsize,
        timeoutMs: negotiated.timeoutMs ?? defaultTimeoutMs,
        retries,
        oack: hasOack ? encodeOack(negotiated.oack) : undefined,
        log,
        onDone: (result) => {
          transfers.delete(key);
          finished(request, rinfo, resolved.path, started, result);
          release();
        },
      });
      transfers.set(key, transfer);
      handedOver = true;
      transfer.start();
    } catch (err) {
      // Nothing above is expected to throw; if it does, the client still gets an answer.
      log.error({ err }, "tftp request failed");
      reply(rinfo, ERR_NOT_DEFINED, "Server error");
    } finally {
      if (!handedOver) release();
    }
  }

  function finished(
    request: TftpRequest,
    rinfo: RemoteInfo,
    path: string,
    started: number,
    result: TransferResult,
  ): void {
    const durationMs = now() - started;
    const sizeProbe = result.abortedAtOack === true && result.errorCode === ERR_OPTION_REFUSED;
    const fields = {
      client: rinfo.address,
      port: rinfo.port,
      file: request.filename,
      bytes: result.bytes,
      durationMs,
    };
    if (result.ok) {
      limitedLog(doneLimiter, "info", fields, "tftp transfer complete");
    } else if (sizeProbe) {
      log.debug(fields, "tftp client ended after the option negotiation (size probe)");
    } else {
      limitedLog(failedLimiter, "info", { ...fields, error: result.error }, "tftp transfer failed");
    }
    const event: TftpTransferEvent = {
      file: request.filename,
      path,
      bytes: result.bytes,
      durationMs,
      clientAddress: rinfo.address,
      clientPort: rinfo.port,
      ok: result.ok,
    };
    if (result.error !== undefined) event.error = result.error;
    if (result.errorCode !== undefined) event.errorCode = result.errorCode;
    if (sizeProbe) event.sizeProbe = true;
    emit(event);
  }

  function bindTransferSocket(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = createSocket({ type: socketType(address), lookup: literalLookup });
      const onError = (err: Error) => {
        s.close();
        reject(err);
      };
      s.once("error", onError);
      s.bind({ address, port: 0, exclusive: true }, () => {
        s.off("error", onError);
        resolve(s);
      });
    });
  }

  return {
    async listen() {
      if (socket !== undefined) throw new Error("tftp server already listening");
      realRoot = await realpath(opts.root);
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
      socket = s;
      const bound = s.address();
      log.info(
        { address: bound.address, port: bound.port, root: realRoot },
        "tftp server listening",
      );
      return { address: bound.address, port: bound.port };
    },

    async close() {
      if (closing) return;
      closing = true;
      const s = socket;
      socket = undefined;
      if (s !== undefined) await new Promise<void>((resolve) => s.close(() => resolve()));
      if (inFlight > 0) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          drained = resolve;
          timer = setTimeout(resolve, closeTimeoutMs);
        });
        clearTimeout(timer);
        for (const t of [...transfers.values()]) t.abort("Server shutting down");
        // Requests still resolving see `closing` and give up by themselves; wait for them briefly.
        if (inFlight > 0) {
          await new Promise<void>((resolve) => {
            drained = resolve;
            setTimeout(resolve, 1000).unref();
          });
        }
      }
    },

    stats() {
      return { ...store.stats(), activeTransfers: transfers.size };
    },
  };
}
