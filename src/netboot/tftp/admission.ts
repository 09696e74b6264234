// Admission to the TFTP server: which requests may start a transfer, and the bookkeeping of
// what runs per client (address and port, the client's TID), so the limit holds and close()
// can drain. The transfer itself (resolving the name, opening the file, the window loop) is
// server.ts and transfer.ts; nothing here touches a socket.

import {
  ERR_ACCESS_VIOLATION,
  ERR_ILLEGAL_OPERATION,
  ERR_NOT_DEFINED,
  type TftpRequest,
} from "./packet.js";

/** Why a request is refused: the ERROR sent to the client, and what the log says. */
export interface Refusal {
  code: number;
  message: string;
  reason: string;
  level: "info" | "warn";
}

export type AdmissionVerdict =
  | { admit: true }
  /** A resent request of a transfer already under way: it answers with its own retransmission. */
  | { admit: false; duplicate: true }
  | { admit: false; duplicate: false; refusal: Refusal };

/** What admission needs from a running transfer. */
export interface Abortable {
  abort(message: string): void;
}

export class Admission {
  /** Requests being resolved plus running transfers: both count against maxTransfers. */
  private inFlight = 0;
  private readonly running = new Map<string, Abortable>();
  private readonly pending = new Set<string>();
  private closing = false;
  private drained: (() => void) | undefined;

  constructor(private readonly maxTransfers: number) {}

  get isClosing(): boolean {
    return this.closing;
  }

  get activeTransfers(): number {
    return this.running.size;
  }

  /**
   * Whether this read-only server takes the request from `client` (address|port). An
   * admitted request holds a slot until end(); it is pending until settled().
   */
  admit(request: TftpRequest, client: string): AdmissionVerdict {
    if (request.op === "WRQ") {
      return refused(
        ERR_ACCESS_VIOLATION,
        "Access violation: read-only server",
        "write request",
        "info",
      );
    }
    if (request.mode === "mail") {
      return refused(ERR_ILLEGAL_OPERATION, "Mail mode not supported", "mail mode", "info");
    }
    if (this.running.has(client) || this.pending.has(client)) {
      return { admit: false, duplicate: true };
    }
    if (this.inFlight >= this.maxTransfers) {
      return refused(
        ERR_NOT_DEFINED,
        `Server busy: ${this.maxTransfers} transfers running, retry later`,
        "too many concurrent transfers",
        "warn",
      );
    }
    this.inFlight++;
    this.pending.add(client);
    return { admit: true };
  }

  /** The admitted request became a running transfer. */
  started(client: string, transfer: Abortable): void {
    this.running.set(client, transfer);
  }

  /** The work that resolved the request is over (a transfer may still run). */
  settled(client: string): void {
    this.pending.delete(client);
  }

  /** The request's slot is free again: its transfer ended, or it never started one. */
  end(client: string): void {
    this.running.delete(client);
    this.inFlight--;
    if (this.closing && this.inFlight === 0) this.drained?.();
  }

  /**
   * No more admissions; lets what runs finish within `timeoutMs`, then aborts the rest and
   * waits briefly for requests still resolving (they see isClosing and give up).
   */
  async close(timeoutMs: number): Promise<void> {
    this.closing = true;
    if (this.inFlight === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.drained = resolve;
      timer = setTimeout(resolve, timeoutMs);
    });
    clearTimeout(timer);
    for (const t of [...this.running.values()]) t.abort("Server shutting down");
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        this.drained = resolve;
        setTimeout(resolve, 1000).unref();
      });
    }
  }
}

function refused(
  code: number,
  message: string,
  reason: string,
  level: Refusal["level"],
): AdmissionVerdict {
  return { admit: false, duplicate: false, refusal: { code, message, reason, level } };
}
