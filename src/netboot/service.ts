import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import type { Hono } from "hono";
import type { Logger } from "pino";
import type { EventBus } from "../events/bus.js";
import type { BootfleetMetrics } from "../metrics/bootfleet.js";
import type { Store } from "../store/index.js";
import { bootRoutes } from "./boot-routes.js";
import type { SanbootPreparer } from "./boot-script.js";
import type { BootFiles } from "./dhcp/proxy.js";
import {
  type ProxyDhcpServer,
  type ProxyDhcpServerOptions,
  startProxyDhcp,
} from "./dhcp/server.js";
import { warmUpProxyPath } from "./dhcp/warm-up.js";
import { dhcpPolicy } from "./dhcp-policy.js";
import { Discovery } from "./discovery.js";
import { parseSubnet } from "./peer-binding.js";
import { TemplateOverrides } from "./script/overrides.js";
import { loadTemplates } from "./script/render.js";
import { DEFAULT_BOOT_TOKEN_LIFETIME_MS, issueBootToken, UsedTokens } from "./script/token.js";
import type { NetbootSettings } from "./settings.js";
import { createTftpServer, type TftpServer } from "./tftp/server.js";
import { BootTimeline } from "./timeline.js";

export interface NetbootDeps {
  settings: NetbootSettings;
  store: Store;
  log: Logger;
  bootKey: Uint8Array;
  /** The MAC behind a client address, from the host's neighbour table. */
  macForIp(ip: string): Promise<string | undefined>;
  sanboot?: SanbootPreparer;
  /** Counters and phase durations for /metrics. */
  metrics?: BootfleetMetrics;
  /** machine_discovered events for the API's event streams. */
  bus?: EventBus;
  /** Told after a boot phase was stamped on a machine's session. */
  onPhase?: (machineId: number) => void;
  /** The same for several machines stamped together (the DHCP offers of one turn). */
  onPhases?: (machineIds: readonly number[]) => void;
  /** A template override was refused (the error), or is fine again (null). */
  onTemplateProblem?: (file: string, message: string | null) => void;
}

export interface Netboot {
  /** Mounted by the daemon at /boot. */
  routes: Hono;
  /** Starts TFTP and proxy-DHCP (whichever the settings enable). */
  start(): Promise<void>;
  close(): Promise<void>;
  summary(): string;
  /** Whether TFTP and proxy-DHCP serve, are off by configuration, or failed, and where. */
  status(): Record<
    "dhcp" | "tftp",
    { status: "healthy" | "disabled" | "unhealthy"; reason: string }
  >;
}

/**
 * Netboot as one service: proxy-DHCP decides (dhcp-policy.ts, from the boot plan), TFTP
 * hands out iPXE, HTTP hands iPXE its script (boot-routes.ts), discovery records who
 * asked, and the timeline stamps each phase on the machine's boot session. This function
 * only wires them.
 */
export async function createNetboot(deps: NetbootDeps): Promise<Netboot> {
  const { settings: s, store, log } = deps;
  const timeline = new BootTimeline({
    store,
    log,
    macForIp: deps.macForIp,
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
    ...(deps.onPhase ? { onPhase: deps.onPhase } : {}),
    ...(deps.onPhases ? { onPhases: deps.onPhases } : {}),
  });
  const builtIn = await loadTemplates(s.templatesDir);
  const overrides = s.templateOverridesDir
    ? new TemplateOverrides({
        builtIn,
        dir: s.templateOverridesDir,
        log,
        ...(deps.onTemplateProblem ? { onProblem: deps.onTemplateProblem } : {}),
      })
    : undefined;
  await overrides?.start();
  const ipxeBinaries = ipxeBinariesByName(s);
  const urls = bootUrls(s, deps.bootKey);
  const routes = bootRoutes({
    store,
    log,
    templates: overrides?.templates ?? builtIn,
    bootKey: deps.bootKey,
    peers: { macForIp: deps.macForIp, routedSubnets: s.routedSubnets.map(parseSubnet) },
    usedTokens: new UsedTokens(),
    ipxeBinaries,
    imagesDir: s.imagesDir,
    ...(deps.sanboot ? { sanboot: deps.sanboot } : {}),
    menuTimeoutSeconds: s.menuTimeoutSeconds,
    scriptUrl: (mac, query) => urls.script(s.serverAddress, mac, query),
    fileUrl: (imageId, name) => `${urls.base(s.serverAddress)}/boot/files/${imageId}/${name}`,
    kernelCmdline: (image) => {
      const path = join(s.imagesDir, image.filename, "cmdline.txt");
      return existsSync(path) ? readFileSync(path, "utf8").trim() : "";
    },
    onScriptServed: (machine, clientIp, kind) => timeline.scriptServed(machine, clientIp, kind),
    onBinaryServed: (e) => {
      timeline
        .binaryServed(e)
        .catch((err: unknown) => log.warn({ err }, "HTTP transfer not recorded on the timeline"));
    },
  });
  const policy = dhcpPolicy({
    discovery: new Discovery({ store, log, ...(deps.bus ? { bus: deps.bus } : {}) }),
    timeline,
    scriptUrl: (serverAddress, mac) => urls.script(serverAddress, mac),
    chainloadNicIpxe: s.dhcp.chainloadNicIpxe,
  });

  let tftp: TftpServer | undefined;
  let dhcp: ProxyDhcpServer | undefined;
  return {
    routes,
    async start() {
      if (s.tftp.enabled) tftp = await startTftp(s, log, ipxeBinaries, timeline, deps.metrics);
      if (s.dhcp.enabled) {
        // The policy records each reply on the timeline itself (it holds the machine).
        dhcp = await startDhcp(s, log, {
          policy,
          httpBootUrl: `${urls.base(s.serverAddress)}/boot/ipxe/${basename(s.ipxe.efiX64)}`,
        });
      }
    },
    async close() {
      await Promise.all([dhcp?.close(), tftp?.close(), overrides?.close()]);
      timeline.flushOffers();
    },
    status() {
      const state = (enabled: boolean, running: boolean, where: string) =>
        !enabled
          ? { status: "disabled" as const, reason: "disabled in the configuration" }
          : running
            ? { status: "healthy" as const, reason: where }
            : { status: "unhealthy" as const, reason: "enabled but not started" };
      return {
        tftp: state(s.tftp.enabled, tftp !== undefined, `listening on UDP port ${s.tftp.port}`),
        dhcp: state(
          s.dhcp.enabled,
          dhcp !== undefined,
          `proxy-DHCP on ${s.interfaces.map((i) => `${i.name} (${i.address})`).join(", ")}`,
        ),
      };
    },
    summary() {
      return `TFTP ${tftp ? `:${s.tftp.port}` : "off"}, proxy-DHCP ${dhcp ? `on ${s.interfaces.map((i) => i.name).join(",")}` : "off"}`;
    },
  };
}

async function startTftp(
  s: NetbootSettings,
  log: Logger,
  ipxeBinaries: Record<string, string>,
  timeline: BootTimeline,
  metrics: BootfleetMetrics | undefined,
): Promise<TftpServer> {
  // Only the netboot interfaces' addresses: TFTP has no business on other networks.
  const addresses = s.interfaces.map((i) => i.address);
  if (addresses.length === 0) {
    log.warn("TFTP listens on every address: set [netboot] interfaces to restrict it");
  }
  const tftp = createTftpServer({
    root: s.tftp.root,
    aliases: ipxeBinaries,
    addresses,
    port: s.tftp.port,
    maxTransfers: s.tftp.maxTransfers,
    log,
    ...(metrics ? { onBusy: () => metrics.tftpBusy() } : {}),
    onTransfer: (e) => {
      timeline
        .transferred(e)
        .catch((err: unknown) => log.warn({ err }, "TFTP transfer not recorded on the timeline"));
    },
  });
  const bound = await tftp.listen().catch((err: Error) => {
    throw new Error(`TFTP cannot listen on port ${s.tftp.port}: ${err.message}`);
  });
  log.info({ port: bound.port }, "TFTP listening");
  return tftp;
}

async function startDhcp(
  s: NetbootSettings,
  log: Logger,
  wiring: Pick<ProxyDhcpServerOptions, "policy" | "onReply"> & { httpBootUrl: string },
): Promise<ProxyDhcpServer> {
  if (s.interfaces.length === 0) {
    throw new Error(
      "DHCP has no interface to serve: set [netboot] interfaces (an interface with an IPv4 address)",
    );
  }
  const dhcpBootFiles = { ...bootFiles(s), httpBootUrl: wiring.httpBootUrl };
  // Before the first real request: see dhcp/warm-up.ts.
  const warm = warmUpProxyPath({
    bootFiles: dhcpBootFiles,
    serverAddress: s.interfaces[0]!.address,
    // A stand-in, not the host's own-MAC check: the warm-up's samples are never the
    // host's, and the real check's first kernel read belongs to the first real request.
    isOwnMac: () => false,
  });
  log.info(warm, "proxy-DHCP request path warmed up");
  const dhcp = await startProxyDhcp({
    interfaces: s.interfaces,
    bootFiles: dhcpBootFiles,
    log,
    replyDelayMs: s.dhcp.replyDelayMs,
    ...(s.dhcp.isOwnMac ? { isOwnMac: s.dhcp.isOwnMac } : {}),
    policy: wiring.policy,
    ...(wiring.onReply ? { onReply: wiring.onReply } : {}),
  }).catch((err: Error) => {
    throw new Error(`DHCP cannot start: ${err.message}`);
  });
  log.info(
    { interfaces: s.interfaces.map((i) => `${i.name}=${i.address}`) },
    "proxy-DHCP listening",
  );
  return dhcp;
}

/** The iPXE binaries by the name a client asks for (TFTP aliases, /boot/ipxe/:name). */
function ipxeBinariesByName(s: NetbootSettings): Record<string, string> {
  const binaries: Record<string, string> = {
    [basename(s.ipxe.bios)]: s.ipxe.bios,
    [basename(s.ipxe.efiX64)]: s.ipxe.efiX64,
  };
  if (s.ipxe.efiArm64) binaries[basename(s.ipxe.efiArm64)] = s.ipxe.efiArm64;
  return binaries;
}

function bootFiles(s: NetbootSettings): BootFiles {
  return {
    bios: basename(s.ipxe.bios),
    uefiX64: basename(s.ipxe.efiX64),
    ...(s.ipxe.efiArm64 ? { uefiArm64: basename(s.ipxe.efiArm64) } : {}),
  };
}

/** URLs on this server's HTTP port; a script URL carries a fresh token bound to the MAC. */
function bootUrls(s: NetbootSettings, bootKey: Uint8Array) {
  const base = (serverAddress: string) => `http://${serverAddress}:${s.httpPort()}`;
  const token = (mac: string) =>
    issueBootToken(bootKey, { mac, expiresAt: Date.now() + DEFAULT_BOOT_TOKEN_LIFETIME_MS });
  return {
    base,
    script: (serverAddress: string, mac: string, query?: string) =>
      `${base(serverAddress)}/boot/${mac.replace(/:/g, "")}/${token(mac)}${query ? `?${query}` : ""}`,
  };
}
