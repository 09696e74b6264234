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
  /**
   * Not answered at all. "duplicate": a resent request of a transfer already under way, which
   * answers with its own retransmission. "busy": every slot is taken; an ERROR would end a PXE
   * ROM's boot for good (it does not retry after one), while silence makes it (and iPXE) resend
   * the request after its timeout, by when a slot has usually come free.
   */
  | { admit: false; unanswered: "duplicate" | "busy" }
  | { admit: false; refusal: Refusal };

/** What admission needs from a running transfer. */
export interface Abortable {
  abort(message: string): void;
}

/** Transfers one source address may run at once, by default. */
export const DEFAULT_MAX_TRANSFERS_PER_ADDRESS = 4;

/** The address part of a client key (address|port). */
function addressOf(client: string): string {
  const bar = client.lastIndexOf("|");
  return bar < 0 ? client : client.slice(0, bar);
}

export class Admission {
  /** Requests being resolved plus running transfers: both count against maxTransfers. */
  private inFlight = 0;
  private readonly running = new Map<string, Abortable>();
  private readonly pending = new Set<string>();
  /** Slots held per source address (every port of one host counts together). */
  private readonly perAddress = new Map<string, number>();
  private closing = false;
  private drained: (() => void) | undefined;

  /**
   * `maxPerAddress` keeps one host from holding every slot: a PXE client needs one or two
   * transfers at a time, a host asking for more is broken or hostile.
   */
  constructor(
    readonly maxTransfers: number,
    private readonly maxPerAddress: number = DEFAULT_MAX_TRANSFERS_PER_ADDRESS,
  ) {}

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
      return { admit: false, unanswered: "duplicate" };
    }
    const address = addressOf(client);
    const held = this.perAddress.get(address) ?? 0;
    // Checked before the global limit: one host over its share is refused with an error even
    // when the server is also full (that host is broken or hostile, not a PC waiting its turn).
    if (held >= this.maxPerAddress) {
      return refused(
        ERR_NOT_DEFINED,
        `Too many transfers from ${address}: at most ${this.maxPerAddress} at a time`,
        "too many concurrent transfers from one address",
        "warn",
      );
    }
    if (this.inFlight >= this.maxTransfers) return { admit: false, unanswered: "busy" };
    this.inFlight++;
    this.perAddress.set(address, held + 1);
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
    const address = addressOf(client);
    const held = (this.perAddress.get(address) ?? 1) - 1;
    if (held > 0) this.perAddress.set(address, held);
    else this.perAddress.delete(address);
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
  return { admit: false, refusal: { code, message, reason, level } };
}
