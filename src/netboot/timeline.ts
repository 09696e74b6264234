import type { Logger } from "pino";
import type { BootfleetMetrics } from "../metrics/bootfleet.js";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import type { OfferSink } from "../store/pending-offers.js";
import type { HttpBinaryEvent } from "./boot-routes.js";
import type { ProxyRequestInfo } from "./dhcp/server.js";
import type { TftpTransferEvent } from "./tftp/server.js";

export interface BootTimelineDeps {
  store: Store;
  log: Logger;
  /** Counters and phase durations for /metrics. */
  metrics?: BootfleetMetrics;
  /**
   * The MAC behind a client address (the kernel's neighbour table): a TFTP transfer
   * carries only the client's address. Asynchronous (host/neighbours.ts NeighbourTable
   * reads /proc without blocking): it runs once per served transfer.
   */
  macForIp(ip: string): Promise<string | undefined>;
  /** Told after a phase was stamped on a machine's session (the fleet's live state). */
  onPhase?: (machineId: number) => void;
  /** The same for several machines at once (one batched read); else onPhase for each. */
  onPhases?: (machineIds: readonly number[]) => void;
}

/**
 * The boot timeline: each phase of a boot (DHCP offer, TFTP or HTTP transfer of iPXE,
 * script served) is stamped on the machine's current boot session, and timed for /metrics. It also knows
 * where a boot stands, which the proxy-DHCP asks to avoid a chainload loop.
 */
export class BootTimeline {
  /** Told when the offers and transfers it queued were written (or not): the fleet, or the log. */
  readonly #offers: OfferSink = {
    written: (machineIds) => {
      const { onPhase, onPhases } = this.deps;
      if (onPhases) onPhases(machineIds);
      else if (onPhase) for (const id of machineIds) onPhase(id);
    },
    failed: (err, { kept, dropped }) => {
      // The offers went out: the PCs boot whatever the timeline says.
      this.deps.log.warn({ err, kept, dropped }, "boot phases not recorded on the timeline yet");
    },
  };

  constructor(private readonly deps: BootTimelineDeps) {}

  /**
   * A proxy-DHCP reply went out to a machine the store knows (the one the DHCP policy
   * read for this request; undefined: not recorded). An offer opens a new boot session
   * unless this boot is still on its way to its script (the firmware's DHCP, then iPXE's
   * own DHCP, belong to one boot). The offer is written behind the reply, with the others
   * of the next few milliseconds in one transaction (store/pending-offers.ts): its write
   * was most of a known machine's cost (bench/dhcp). The store writes it before anything
   * reads a session, so the script route, the API and the fleet never miss it.
   */
  replied(
    machine: Pick<Machine, "id"> | undefined,
    req: ProxyRequestInfo,
    kind: "offer" | "ack",
  ): void {
    if (kind !== "offer") return;
    this.deps.metrics?.dhcpOffer(req.client.isIpxe ? "ipxe" : (req.client.arch ?? 0));
    if (!machine) return;
    this.deps.store.pendingOffers.add(
      {
        machine_id: machine.id,
        server_ip: req.serverAddress,
        boot_method: req.client.archKind,
        at: new Date().toISOString(),
      },
      this.#offers,
    );
  }

  /** Writes the offers queued so far now (a stop; tests). Reads of the store do it anyway. */
  flushOffers(): void {
    this.deps.store.pendingOffers.flush();
  }

  /**
   * A TFTP transfer ended (a size probe is not a phase). Resolves once it is recorded;
   * the MAC lookup is asynchronous, so the TFTP loop never waits on it.
   */
  async transferred(e: TftpTransferEvent): Promise<void> {
    if (e.sizeProbe) return;
    const { metrics, log } = this.deps;
    metrics?.tftpTransfer(e.ok ? "ok" : e.errorCode === 8 ? "aborted" : "error", e.bytes);
    // The TFTP server's own line ("tftp transfer complete", rate-limited) is the info one.
    log.debug(
      {
        file: e.file,
        bytes: e.bytes,
        duration_ms: e.durationMs,
        client: e.clientAddress,
        ok: e.ok,
      },
      "TFTP transfer finished",
    );
    // Only a served file is a boot phase: refusals and failures (a flood of them, maybe)
    // never reach the neighbour table.
    if (!e.ok) return;
    await this.#stampTransfer(e);
  }

  /**
   * UEFI HTTP boot fetched iPXE's EFI binary over HTTP: the same phase as a TFTP transfer
   * (the session's boot_method, x64-http, tells them apart). It also marks this boot as
   * having loaded bootfleet's iPXE, so that iPXE gets its script and no chainload.
   */
  async binaryServed(e: HttpBinaryEvent): Promise<void> {
    this.deps.log.info(
      { file: e.file, bytes: e.bytes, duration_ms: e.durationMs, client: e.clientAddress },
      "iPXE binary served over HTTP",
    );
    await this.#stampTransfer(e);
  }

  async #stampTransfer(e: {
    file: string;
    bytes: number;
    durationMs: number;
    clientAddress: string;
  }): Promise<void> {
    const { store, metrics } = this.deps;
    const mac = await this.deps.macForIp(e.clientAddress);
    // The DHCP path's look-up (from memory, without writing the queue first: a read that
    // wrote it made each transfer a transaction again).
    const machine = mac ? store.machines.bootViewByMac(mac) : undefined;
    if (!machine) return;
    // Written behind, with the offers (store/pending-offers.ts); the fleet is told once it
    // is, as for an offer. Every reader of sessions in this process writes it first.
    store.pendingOffers.addTransfer(
      {
        machine_id: machine.id,
        at: new Date().toISOString(),
        file: e.file,
        bytes: e.bytes,
        duration_ms: Math.round(e.durationMs),
      },
      this.#offers,
    );
    metrics?.bootPhase("tftp", e.durationMs / 1000);
  }

  /** A script was served over HTTP (machine undefined: a MAC the store does not know). */
  scriptServed(machine: Machine | undefined, clientIp: string, kind: string): void {
    const { store, metrics } = this.deps;
    metrics?.scriptServed(kind);
    if (!machine) return;
    const session = store.sessions.stampPhase(machine.id, "script_served_at", {
      client_ip: clientIp,
    });
    this.deps.onPhase?.(machine.id);
    const from = session.tftp_done_at ?? session.dhcp_offer_at;
    if (from && session.script_served_at) {
      metrics?.bootPhase("script", secondsBetween(from, session.script_served_at));
    }
  }

  /**
   * Whether this boot already loaded bootfleet's iPXE over TFTP: the iPXE asking now is
   * that one, and gets its script (no chainload loop).
   */
  chainloadedThisBoot(machine: Pick<Machine, "id"> | undefined): boolean {
    if (!machine) return false;
    const current = this.deps.store.sessions.current(machine.id);
    return (
      current?.status === "starting" && current.tftp_done_at !== null && !current.script_served_at
    );
  }
}

function secondsBetween(fromIso: string, toIso: string): number {
  return Math.max(0, (Date.parse(toIso) - Date.parse(fromIso)) / 1000);
}
