// What the TFTP server tells the operator (log lines, each kind on its own budget) and the
// daemon (one TftpTransferEvent per request that got an answer).

import type { RemoteInfo } from "node:dgram";
import type { Logger } from "pino";
import { createLogLimiter, type LogLimiter } from "../log-limiter.js";
import type { Refusal } from "./admission.js";
import { ERR_OPTION_REFUSED, type TftpRequest } from "./packet.js";
import type { TransferResult } from "./transfer.js";

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

export class TransferReport {
  // One budget per kind of line, so a flood of bad requests cannot also hide transfer failures.
  private readonly refusedLimiter: LogLimiter;
  private readonly failedLimiter: LogLimiter;
  private readonly doneLimiter: LogLimiter;
  private readonly busyLimiter: LogLimiter;

  constructor(
    private readonly log: Logger,
    private readonly now: () => number,
    private readonly onTransfer?: (event: TftpTransferEvent) => void,
  ) {
    this.refusedLimiter = createLogLimiter({ max: 20, intervalMs: 10_000, now });
    this.failedLimiter = createLogLimiter({ max: 20, intervalMs: 10_000, now });
    this.doneLimiter = createLogLimiter({ max: 100, intervalMs: 10_000, now });
    // A storm at capacity leaves hundreds of requests unanswered a second; a few lines say so.
    this.busyLimiter = createLogLimiter({ max: 5, intervalMs: 10_000, now });
  }

  malformed(rinfo: RemoteInfo, reason: string): void {
    this.limited(
      this.refusedLimiter,
      "info",
      { client: rinfo.address, port: rinfo.port, reason },
      "tftp malformed request",
    );
  }

  /**
   * A request left unanswered because every slot was taken. No TftpTransferEvent: nothing was
   * answered, and the client's resent request will be admitted (or left again) in its turn.
   */
  busy(request: TftpRequest, rinfo: RemoteInfo, maxTransfers: number): void {
    this.limited(
      this.busyLimiter,
      "warn",
      { client: rinfo.address, port: rinfo.port, file: request.filename, maxTransfers },
      "tftp server busy: request left unanswered until the client resends it",
    );
  }

  refused(request: TftpRequest, rinfo: RemoteInfo, started: number, refusal: Refusal): void {
    this.limited(
      this.refusedLimiter,
      refusal.level,
      {
        client: rinfo.address,
        port: rinfo.port,
        file: request.filename,
        reason: refusal.reason,
        errorCode: refusal.code,
      },
      "tftp request refused",
    );
    this.emit({
      file: request.filename,
      bytes: 0,
      durationMs: this.now() - started,
      clientAddress: rinfo.address,
      clientPort: rinfo.port,
      ok: false,
      error: refusal.reason,
      errorCode: refusal.code,
    });
  }

  finished(
    request: TftpRequest,
    rinfo: RemoteInfo,
    path: string,
    started: number,
    result: TransferResult,
  ): void {
    const durationMs = this.now() - started;
    const sizeProbe = result.abortedAtOack === true && result.errorCode === ERR_OPTION_REFUSED;
    const fields = {
      client: rinfo.address,
      port: rinfo.port,
      file: request.filename,
      bytes: result.bytes,
      durationMs,
    };
    if (result.ok) {
      this.limited(this.doneLimiter, "info", fields, "tftp transfer complete");
    } else if (sizeProbe) {
      this.log.debug(fields, "tftp client ended after the option negotiation (size probe)");
    } else {
      this.limited(
        this.failedLimiter,
        "info",
        { ...fields, error: result.error },
        "tftp transfer failed",
      );
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
    this.emit(event);
  }

  private limited(
    limiter: LogLimiter,
    level: "debug" | "info" | "warn",
    fields: Record<string, unknown>,
    msg: string,
  ): void {
    if (!this.log.isLevelEnabled(level)) return;
    const { allowed, suppressed } = limiter.take();
    if (!allowed) return;
    this.log[level](suppressed > 0 ? { ...fields, suppressedLines: suppressed } : fields, msg);
  }

  private emit(event: TftpTransferEvent): void {
    if (this.onTransfer === undefined) return;
    try {
      this.onTransfer(event);
    } catch (err) {
      this.log.error({ err }, "tftp onTransfer callback threw");
    }
  }
}
