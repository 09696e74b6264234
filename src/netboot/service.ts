import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import type { Hono } from "hono";
import type { Logger } from "pino";
import type { Config } from "../daemon/config.js";
import { interfaceIPv4 } from "../daemon/netinfo.js";
import type { EventBus } from "../events/bus.js";
import type { BootfleetMetrics } from "../metrics/bootfleet.js";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import { bootRoutes } from "./boot-routes.js";
import type { SanbootPreparer } from "./boot-script.js";
import { ClientAddresses } from "./client-addresses.js";
import type { BootFiles } from "./dhcp/proxy.js";
import type { DhcpInterface } from "./dhcp/transport.js";
import { DiscoveryLimiter } from "./discovery.js";
import { macForIp } from "./neighbours.js";
import { type ProxyDhcpServer, type ProxyRequestInfo, startProxyDhcp } from "./proxy-server.js";
import { loadTemplates } from "./script/render.js";
import { DEFAULT_BOOT_TOKEN_LIFETIME_MS, issueBootToken } from "./script/token.js";
import { createTftpServer, type TftpServer, type TftpTransferEvent } from "./tftp/server.js";

export interface NetbootDeps {
  config: Config;
  store: Store;
  log: Logger;
  bootKey: Uint8Array;
  /** Folder of the iPXE script templates. */
  templatesDir: string;
  /** The HTTP port the daemon listens on, known once it is bound. */
  httpPort: () => number;
  /** Read at each reply so SIGHUP can change it. */
  replyDelayMs: () => number;
  sanboot?: SanbootPreparer;
  /** Counters and phase durations for /metrics. */
  metrics?: BootfleetMetrics;
  /** machine_discovered events for the API's event streams. */
  bus?: EventBus;
}

export interface Netboot {
  /** Mounted by the daemon at /boot. */
  routes: Hono;
  /** Starts TFTP and proxy-DHCP (whichever the configuration enables). */
  start(): Promise<void>;
  close(): Promise<void>;
  summary(): string;
}

/** New machines registered at most this often, and this many waiting at most. */
const DISCOVERIES_PER_MINUTE = 60;
const MAX_DISCOVERED = 5000;
const LAST_SEEN_RESOLUTION_MS = 10_000;

/**
 * Netboot as one service: proxy-DHCP decides, TFTP hands out iPXE, HTTP hands iPXE its
 * script, and each phase is stamped on the machine's boot session.
 */
export async function createNetboot(deps: NetbootDeps): Promise<Netboot> {
  const { config, store, log } = deps;
  const templates = await loadTemplates(deps.templatesDir);
  const addresses = new ClientAddresses();
  const limiter = new DiscoveryLimiter(DISCOVERIES_PER_MINUTE, MAX_DISCOVERED);
  const interfaces = netbootInterfaces(config, log);
  const primaryAddress = config.netboot.server_address || interfaces[0]?.address || "127.0.0.1";

  const ipxeBinaries: Record<string, string> = {
    [basename(config.tftp.ipxe_bios)]: config.tftp.ipxe_bios,
    [basename(config.tftp.ipxe_efi_x64)]: config.tftp.ipxe_efi_x64,
  };
  if (config.tftp.ipxe_efi_arm64) {
    ipxeBinaries[basename(config.tftp.ipxe_efi_arm64)] = config.tftp.ipxe_efi_arm64;
  }
  const httpBase = (serverAddress: string) => `http://${serverAddress}:${deps.httpPort()}`;
  const issue = (mac: string, ip?: string) =>
    issueBootToken(deps.bootKey, {
      mac,
      ...(ip && ip !== "0.0.0.0" ? { ip } : {}),
      expiresAt: Date.now() + DEFAULT_BOOT_TOKEN_LIFETIME_MS,
    });
  const scriptUrlFor = (serverAddress: string, mac: string, ip?: string, query?: string) =>
    `${httpBase(serverAddress)}/boot/${mac.replace(/:/g, "")}/${issue(mac, ip)}${query ? `?${query}` : ""}`;

  const routes = bootRoutes({
    store,
    log,
    templates,
    bootKey: deps.bootKey,
    addresses,
    ipxeBinaries,
    imagesDir: config.images_dir,
    ...(deps.sanboot ? { sanboot: deps.sanboot } : {}),
    scriptUrl: (mac, query) => scriptUrlFor(primaryAddress, mac, addresses.get(mac), query),
    fileUrl: (imageId, name) => `${httpBase(primaryAddress)}/boot/files/${imageId}/${name}`,
    kernelCmdline: (image) => {
      const path = join(config.images_dir, image.filename, "cmdline.txt");
      return existsSync(path) ? readFileSync(path, "utf8").trim() : "";
    },
    onScriptServed: (machine, clientIp, kind) => {
      deps.metrics?.scriptServed(kind);
      if (!machine) return;
      const session = store.sessions.stampPhase(machine.id, "script_served_at", {
        client_ip: clientIp,
      });
      const from = session.tftp_done_at ?? session.dhcp_offer_at;
      if (from && session.script_served_at) {
        deps.metrics?.bootPhase("script", secondsBetween(from, session.script_served_at));
      }
    },
  });

  let tftp: TftpServer | undefined;
  let dhcp: ProxyDhcpServer | undefined;

  const policy = (req: ProxyRequestInfo) => {
    const { client } = req;
    if (req.sourceAddress !== "0.0.0.0") addresses.record(client.mac, req.sourceAddress);
    else if (client.ciaddr !== "0.0.0.0") addresses.record(client.mac, client.ciaddr);
    const machine = recordSeen(req);
    // Local boot, disabled, retired or in maintenance: no boot file (PXE firmware is told
    // to boot locally, iPXE gets silence: see dhcp/proxy.ts), so the PC moves on to its
    // next boot device instead of loading iPXE to be told to exit.
    const noBootFile =
      machine !== undefined &&
      (machine.boot_action === "local" ||
        machine.boot_action === "disabled" ||
        machine.status === "retired" ||
        machine.status === "maintenance" ||
        machine.status === "inactive");
    return {
      noBootFile,
      scriptUrl: () => scriptUrlFor(req.serverAddress, client.mac, addresses.get(client.mac)),
      chainload: config.dhcp.chainload_nic_ipxe && client.isIpxe && !chainloadedThisBoot(machine),
    };
  };

  /**
   * Whether this boot already loaded bootfleet's iPXE over TFTP: the iPXE asking now is
   * that one, and gets its script (no chainload loop).
   */
  const chainloadedThisBoot = (machine: Machine | undefined) => {
    if (!machine) return false;
    const current = store.sessions.current(machine.id);
    return (
      current?.status === "starting" && current.tftp_done_at !== null && !current.script_served_at
    );
  };

  const recordSeen = (req: ProxyRequestInfo) => {
    const { client } = req;
    const known = store.machines.getByMac(client.mac);
    if (!known && !limiter.allow(store.machines.countByStatus("discovered"))) return undefined;
    // A PC sends several requests per boot: last_seen to the second is not worth a write each.
    if (known?.last_seen && Date.now() - Date.parse(known.last_seen) < LAST_SEEN_RESOLUTION_MS) {
      return known;
    }
    const { machine, created } = store.machines.recordSeen({
      mac_address: client.mac,
      client_arch: client.arch ?? null,
      client_uuid: client.uuid ?? null,
      vendor_class: client.vendorClass ?? null,
    });
    if (created) {
      log.info(
        { mac: client.mac, arch: client.archKind, name: machine.name },
        "machine discovered",
      );
      deps.bus?.publish("machine_discovered", {
        machine_id: machine.id,
        mac_address: machine.mac_address,
        client_arch: machine.client_arch,
      });
    }
    return machine;
  };

  const onReply = (req: ProxyRequestInfo, kind: "offer" | "ack") => {
    if (kind === "offer")
      deps.metrics?.dhcpOffer(req.client.isIpxe ? "ipxe" : (req.client.arch ?? 0));
    const machine = store.machines.getByMac(req.client.mac);
    if (!machine || kind !== "offer") return;
    store.transaction(() => {
      const current = store.sessions.current(machine.id);
      // A DISCOVER opens a new boot unless this boot is still on its way to its script
      // (the firmware's DHCP, then iPXE's own DHCP, belong to one boot).
      const sameBoot = current?.status === "starting" && !current.script_served_at;
      if (!sameBoot) {
        if (current) store.sessions.end(current.id, "stopped");
        store.sessions.start({
          machine_id: machine.id,
          server_ip: req.serverAddress,
          boot_method: req.client.archKind,
        });
        store.machines.update(machine.id, {
          boot_count: machine.boot_count + 1,
          last_boot: new Date().toISOString(),
        });
      }
      store.sessions.stampPhase(machine.id, "dhcp_offer_at");
    });
  };

  const onTransfer = (e: TftpTransferEvent) => {
    if (e.sizeProbe) return;
    deps.metrics?.tftpTransfer(e.ok ? "ok" : e.errorCode === 8 ? "aborted" : "error", e.bytes);
    const mac = macForIp(e.clientAddress);
    const machine = mac ? store.machines.getByMac(mac) : undefined;
    log.info(
      {
        file: e.file,
        bytes: e.bytes,
        duration_ms: e.durationMs,
        client: e.clientAddress,
        ok: e.ok,
      },
      "TFTP transfer finished",
    );
    if (machine && e.ok) {
      store.sessions.stampPhase(machine.id, "tftp_done_at", {
        tftp_file: e.file,
        tftp_bytes: e.bytes,
        tftp_duration_ms: Math.round(e.durationMs),
      });
      deps.metrics?.bootPhase("tftp", e.durationMs / 1000);
    }
  };

  const bootFiles: BootFiles = {
    bios: basename(config.tftp.ipxe_bios),
    uefiX64: basename(config.tftp.ipxe_efi_x64),
    ...(config.tftp.ipxe_efi_arm64 ? { uefiArm64: basename(config.tftp.ipxe_efi_arm64) } : {}),
  };

  return {
    routes,
    async start() {
      if (config.tftp.enabled) {
        tftp = createTftpServer({
          root: config.tftp.root,
          aliases: ipxeBinaries,
          port: config.tftp.port,
          maxTransfers: config.tftp.max_transfers,
          log,
          onTransfer,
        });
        const bound = await tftp.listen().catch((err: Error) => {
          throw new Error(`TFTP cannot listen on port ${config.tftp.port}: ${err.message}`);
        });
        log.info({ port: bound.port }, "TFTP listening");
      }
      if (config.dhcp.enabled) {
        if (interfaces.length === 0) {
          throw new Error(
            "DHCP has no interface to serve: set [netboot] interfaces (an interface with an IPv4 address)",
          );
        }
        dhcp = await startProxyDhcp({
          interfaces,
          bootFiles: {
            ...bootFiles,
            httpBootUrl: `${httpBase(primaryAddress)}/boot/ipxe/${basename(config.tftp.ipxe_efi_x64)}`,
          },
          log,
          replyDelayMs: deps.replyDelayMs,
          policy,
          onReply,
        }).catch((err: Error) => {
          throw new Error(`DHCP cannot start: ${err.message}`);
        });
        log.info(
          { interfaces: interfaces.map((i) => `${i.name}=${i.address}`) },
          "proxy-DHCP listening",
        );
      }
    },
    async close() {
      await Promise.all([dhcp?.close(), tftp?.close()]);
    },
    summary() {
      return `TFTP ${tftp ? `:${config.tftp.port}` : "off"}, proxy-DHCP ${dhcp ? `on ${interfaces.map((i) => i.name).join(",")}` : "off"}`;
    },
  };
}

/**
 * Each configured interface with the address replies carry: its own IPv4, or
 * server_address for the first one when set (a server with several addresses on it).
 */
function netbootInterfaces(config: Config, log: Logger): DhcpInterface[] {
  const out: DhcpInterface[] = [];
  config.netboot.interfaces.forEach((name, i) => {
    const address = (i === 0 && config.netboot.server_address) || interfaceIPv4(name);
    if (!address) {
      log.warn({ interface: name }, "netboot interface has no IPv4 address: not served");
      return;
    }
    out.push({ name, address });
  });
  return out;
}

function secondsBetween(fromIso: string, toIso: string): number {
  return Math.max(0, (Date.parse(toIso) - Date.parse(fromIso)) / 1000);
}
