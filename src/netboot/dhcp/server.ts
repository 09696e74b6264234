import type { Logger } from "pino";
import { createLogLimiter } from "../log-limiter.js";
import { type ClientInfo, classifyClient } from "./client.js";
import { type DhcpPacket, decodeDhcp, encodeDhcp } from "./packet.js";
import { type BootFiles, evaluateProxy, type ProxyOutcome, type ProxyPort } from "./proxy.js";
import {
  type DhcpInterface,
  type DhcpTransport,
  type InboundDatagram,
  openDhcpTransport,
} from "./transport.js";

/** What the daemon decides for one PXE client, asked for every request. */
export interface ClientPolicy {
  /** Stay silent: the machine boots locally or is disabled. */
  noBootFile: boolean;
  /** The iPXE script URL handed to clients already running iPXE (made only for them: it is signed). */
  scriptUrl: () => string;
  /**
   * Answer an iPXE client as plain PXE firmware, so it loads bootfleet's own iPXE over
   * TFTP first (for NIC option ROMs whose built-in iPXE is old or broken).
   */
  chainload?: boolean;
  /** After the reply was handed to the kernel: what the policy's side records (the timeline). */
  replied?(kind: "offer" | "ack"): void;
}

export interface ProxyRequestInfo {
  client: ClientInfo & { mac: string };
  ifname: string;
  /** This server's address on the interface the request came in on. */
  serverAddress: string;
  /** The client's source address (0.0.0.0 before it has one). */
  sourceAddress: string;
  port: ProxyPort;
}

export interface ProxyDhcpServerOptions {
  interfaces: DhcpInterface[];
  bootFiles: BootFiles;
  log: Logger;
  /** Read at each reply, so a SIGHUP can change it live. */
  replyDelayMs: () => number;
  policy(req: ProxyRequestInfo): ClientPolicy;
  /** After a reply was handed to the kernel (timeline, metrics). */
  onReply?(req: ProxyRequestInfo, kind: "offer" | "ack", bootFile: string): void;
  /**
   * Whether a MAC is this server's own: a request naming it (`bootfleet doctor`'s PXE
   * DISCOVER, or someone spoofing it) is not a PC, and is neither answered nor recorded.
   */
  isOwnMac?(mac: string): boolean;
}

export interface ProxyDhcpServer {
  close(): Promise<void>;
  stats(): { received: number; replied: number; ignored: number; malformed: number };
}

/**
 * The proxy-DHCP server: datagrams from the per-interface transport are decoded,
 * classified and answered by the pure decision in dhcp/proxy.ts. A malformed packet is
 * counted and logged at a bounded rate, never thrown; non-PXE traffic is ignored silently.
 */
export async function startProxyDhcp(opts: ProxyDhcpServerOptions): Promise<ProxyDhcpServer> {
  const { log } = opts;
  const counters = { received: 0, replied: 0, ignored: 0, malformed: 0 };
  const malformedLog = createLogLimiter({ max: 10, intervalMs: 60_000 });
  const serverAddress = new Map(opts.interfaces.map((i) => [i.name, i.address]));

  const handle = async (d: InboundDatagram) => {
    counters.received++;
    const decoded = decodeDhcp(d.payload);
    if (!decoded.ok) {
      counters.malformed++;
      const { allowed, suppressed } = malformedLog.take();
      if (allowed) {
        log.warn(
          {
            ifname: d.ifname,
            from: `${d.srcAddress}:${d.srcPort}`,
            reason: decoded.error,
            suppressed,
          },
          "malformed DHCP packet dropped",
        );
      }
      return;
    }
    const decision = decide(opts, d, decoded.packet, serverAddress.get(d.ifname));
    if (decision.action === "ignore") {
      counters.ignored++;
      if (decision.reason) {
        log.debug(
          { mac: decision.mac, port: decision.port, reason: decision.reason },
          "PXE request not answered",
        );
      }
      return;
    }
    const { info, outcome, policy } = decision;
    const delay = opts.replyDelayMs();
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    // A datagram can arrive while openDhcpTransport is still resolving.
    if (!transport) return;
    const sent = await transport.send({
      ifname: d.ifname,
      srcPort: info.port,
      dstAddress: outcome.destination.address,
      dstPort: outcome.destination.port,
      payload: encodeDhcp(outcome.reply),
    });
    if (!sent) return;
    counters.replied++;
    const { client } = info;
    const bootFile = outcome.reply.file || outcome.reply.options.get(67)?.toString("utf8") || "";
    const kind = info.port === 67 && client.messageType === "discover" ? "offer" : "ack";
    // debug, not info: a line per reply is a line per packet in a boot storm.
    log.debug(
      {
        mac: client.mac,
        arch: client.archKind,
        ipxe: client.isIpxe,
        ifname: d.ifname,
        port: info.port,
        kind,
      },
      "PXE client answered",
    );
    policy.replied?.(kind);
    opts.onReply?.(info, kind, bootFile);
  };

  let transport: DhcpTransport | undefined;
  transport = await openDhcpTransport({
    interfaces: opts.interfaces,
    log,
    onDatagram: (d) => {
      handle(d).catch((err: unknown) => log.error({ err }, "proxy-DHCP handler failed"));
    },
  });
  return {
    close: () => transport?.close() ?? Promise.resolve(),
    stats: () => ({ ...counters }),
  };
}

export type Decision =
  | {
      action: "reply";
      info: ProxyRequestInfo;
      outcome: Extract<ProxyOutcome, { action: "reply" }>;
      policy: ClientPolicy;
    }
  /** No reason: not a PXE request at all (ignored silently). */
  | { action: "ignore"; mac?: string; port?: ProxyPort; reason?: string };

/**
 * Classifies a decoded request, asks the daemon's policy, and lets dhcp/proxy.ts decide.
 * UEFI HTTP boot firmware (vendor class HTTPClient) is a boot client as much as PXE
 * firmware is: proxy.ts answers it with the http:// URL of iPXE's EFI binary.
 */
export function decide(
  opts: Pick<ProxyDhcpServerOptions, "policy" | "bootFiles" | "isOwnMac">,
  d: Pick<InboundDatagram, "ifname" | "dstPort" | "srcAddress" | "srcPort" | "localAddress">,
  packet: DhcpPacket,
  serverAddress: string | undefined,
): Decision {
  const client = classifyClient(packet);
  const bootClient = client.isPxe || client.isHttpBoot;
  if (!client.isRequest || !bootClient || client.mac === undefined) return { action: "ignore" };
  const port = d.dstPort === 4011 ? 4011 : 67;
  // Before the policy: the policy records the MAC as a discovered machine.
  if (opts.isOwnMac?.(client.mac)) {
    return {
      action: "ignore",
      mac: client.mac,
      port,
      reason: "the request names this server's own MAC",
    };
  }
  const info: ProxyRequestInfo = {
    client: client as ClientInfo & { mac: string },
    ifname: d.ifname,
    serverAddress: serverAddress ?? d.localAddress,
    sourceAddress: d.srcAddress,
    port,
  };
  const policy = opts.policy(info);
  const asked = policy.chainload ? { ...client, isIpxe: false } : client;
  const outcome = evaluateProxy(
    { client: asked, port, source: { address: d.srcAddress, port: d.srcPort } },
    {
      serverAddress: info.serverAddress,
      bootFiles: opts.bootFiles,
      ipxeScriptUrl: () => policy.scriptUrl(),
      noBootFile: policy.noBootFile,
    },
  );
  if (outcome.action === "ignore") {
    return { action: "ignore", mac: client.mac, port, reason: outcome.reason };
  }
  return { action: "reply", info, outcome, policy };
}
