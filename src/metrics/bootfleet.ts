import { Registry } from "./registry.js";

/** Client architectures by DHCP option 93 (RFC 4578 and the IANA registry), as label values. */
const ARCH_BY_CODE: Record<number, string> = {
  0: "bios",
  6: "efi_ia32",
  7: "efi_x64",
  9: "efi_x64",
  10: "efi_arm32",
  11: "efi_arm64",
  16: "efi_x64_http",
  19: "efi_arm64_http",
};
export const ARCH_LABELS = [
  "bios",
  "efi_ia32",
  "efi_x64",
  "efi_arm32",
  "efi_arm64",
  "efi_x64_http",
  "efi_arm64_http",
  "ipxe",
] as const;

export const BOOT_PHASES = ["dhcp", "tftp", "script", "iscsi_login", "total"] as const;
export type BootPhase = (typeof BOOT_PHASES)[number];
export const BOOT_ACTIONS = ["sanboot", "menu", "local", "kernel", "custom", "disabled"] as const;
const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;
const TFTP_RESULTS = ["ok", "error", "aborted"] as const;

// Boot phases take from a fraction of a second (a script) to a minute or two (a UEFI
// firmware's PXE dance): buckets cover that range.
const PHASE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120];
const API_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The product's metrics. The services call these functions; GET /metrics writes
 * `expose()` (with prom-client's process, heap and event-loop metrics). Every label is a small fixed set (architectures, phases, route patterns as
 * the router declares them, status codes).
 */
export class BootfleetMetrics {
  readonly registry = new Registry();

  /**
   * `processMetrics: true` adds prom-client's process_* and nodejs_* series (the daemon
   * does; tests of the product's own series leave them out).
   */
  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics) this.registry.collectProcessMetrics();
  }

  readonly #dhcpOffers = this.registry.counter<"arch">({
    name: "bootfleet_dhcp_offers_total",
    help: "Proxy-DHCP offers sent, by client architecture (option 93; ipxe when the client is iPXE).",
    labels: { arch: ARCH_LABELS },
  });
  readonly #tftpBytes = this.registry.counter({
    name: "bootfleet_tftp_sent_bytes_total",
    help: "Bytes of file data sent over TFTP.",
  });
  readonly #tftpTransfers = this.registry.counter<"result">({
    name: "bootfleet_tftp_transfers_total",
    help: "TFTP transfers ended, by result.",
    labels: { result: TFTP_RESULTS },
  });
  readonly #tftpBusy = this.registry.counter({
    name: "bootfleet_tftp_busy_unanswered_total",
    help: "TFTP requests left unanswered (the PC sends them again) because tftp.max_transfers were running.",
  });
  readonly #scripts = this.registry.counter<"action">({
    name: "bootfleet_boot_scripts_served_total",
    help: "iPXE scripts served over HTTP, by boot action.",
    labels: { action: BOOT_ACTIONS },
  });
  readonly #activeSessions = this.registry.gauge({
    name: "bootfleet_active_sessions",
    help: "Boot sessions currently starting or active.",
  });
  readonly #phase = this.registry.histogram<"phase">({
    name: "bootfleet_boot_phase_duration_seconds",
    help: "Time a boot spent in each phase (total: first DHCP offer to iSCSI login).",
    labels: { phase: BOOT_PHASES },
    buckets: PHASE_BUCKETS,
  });
  readonly #apiRequests = this.registry.counter<"method" | "route" | "status">({
    name: "bootfleet_api_requests_total",
    help: "API requests answered, by method, route pattern and status code.",
    // Route patterns come from the route table (e.g. /api/images/:id), never the raw path;
    // the cap guards against a caller passing one anyway.
    labels: { method: HTTP_METHODS, route: { maxValues: 200 }, status: { maxValues: 60 } },
  });
  readonly #apiDuration = this.registry.histogram<"method" | "route">({
    name: "bootfleet_api_request_duration_seconds",
    help: "API request handling time, by method and route pattern.",
    labels: { method: HTTP_METHODS, route: { maxValues: 200 } },
    buckets: API_BUCKETS,
  });
  readonly #jobs = this.registry.counter<"type" | "status">({
    name: "bootfleet_jobs_finished_total",
    help: "Jobs finished, by type and final status.",
    labels: { type: { maxValues: 30 }, status: ["succeeded", "failed", "cancelled"] },
  });
  readonly #eventsDropped = this.registry.gauge({
    name: "bootfleet_events_dropped",
    help: "Events not delivered to slow subscribers since the daemon started.",
  });

  /** `arch` is option 93's code, or "ipxe" when the client already runs iPXE. */
  dhcpOffer(arch: number | "ipxe"): void {
    this.#dhcpOffers.inc({ arch: arch === "ipxe" ? "ipxe" : (ARCH_BY_CODE[arch] ?? "other") });
  }

  tftpTransfer(result: (typeof TFTP_RESULTS)[number], bytesSent: number): void {
    this.#tftpTransfers.inc({ result });
    if (bytesSent > 0) this.#tftpBytes.inc(undefined, bytesSent);
  }

  /** A PC's TFTP request waited for a free transfer slot: the room outgrew tftp.max_transfers. */
  tftpBusy(): void {
    this.#tftpBusy.inc();
  }

  scriptServed(action: string): void {
    this.#scripts.inc({ action });
  }

  activeSessions(n: number): void {
    this.#activeSessions.set(n);
  }

  bootPhase(phase: BootPhase, seconds: number): void {
    this.#phase.observe(seconds, { phase });
  }

  /** `route` is the route pattern the router matched (Hono's `c.req.routePath`). */
  apiRequest(method: string, route: string, status: number, seconds: number): void {
    this.#apiRequests.inc({ method, route, status: String(status) });
    this.#apiDuration.observe(seconds, { method, route });
  }

  jobFinished(type: string, status: "succeeded" | "failed" | "cancelled"): void {
    this.#jobs.inc({ type, status });
  }

  readonly #overlaysBehind = this.registry.gauge({
    name: "bootfleet_overlays_behind",
    help: "Targets whose overlay was cloned from an older version than the one they follow.",
  });
  readonly #versionsBehindMax = this.registry.gauge({
    name: "bootfleet_overlay_versions_behind_max",
    help: "The most versions any target's overlay is behind its image.",
  });
  readonly #updatesOpen = this.registry.gauge({
    name: "bootfleet_image_updates_open",
    help: "Image updates open on a super-client (not yet committed or discarded).",
  });

  /** The update cycle at a glance, without per-machine labels. */
  imageVersions(v: { overlaysBehind: number; versionsBehindMax: number; updatesOpen: number }) {
    this.#overlaysBehind.set(v.overlaysBehind);
    this.#versionsBehindMax.set(v.versionsBehindMax);
    this.#updatesOpen.set(v.updatesOpen);
  }

  /** Gauges read from elsewhere at scrape time (the bus's drop count, say). */
  onCollect(fn: (m: { eventsDropped: (n: number) => void }) => void): void {
    this.registry.onCollect(() => fn({ eventsDropped: (n) => this.#eventsDropped.set(n) }));
  }

  expose(): Promise<string> {
    return this.registry.expose();
  }
}
