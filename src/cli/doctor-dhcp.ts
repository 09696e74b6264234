import { randomBytes } from "node:crypto";
import { networkInterfaces } from "node:os";
import type { Logger } from "pino";
import pino from "pino";
import {
  MessageType,
  Opt,
  readMessageType,
  readPxeVendorOptions,
  readServerId,
  readVendorClass,
} from "../netboot/dhcp/options.js";
import {
  BOOTREPLY,
  BOOTREQUEST,
  type DhcpPacket,
  decodeDhcp,
  encodeDhcp,
  FLAG_BROADCAST,
} from "../netboot/dhcp/packet.js";
import { type InboundDatagram, openDhcpTransport } from "../netboot/dhcp/transport.js";
import type { CheckResult } from "./check.js";

/** What one other server answered to the doctor's PXE DISCOVER. */
export interface DhcpOfferSeen {
  /** Its server identifier (option 54), else the offer's source address. */
  server: string;
  /** An address offered to the PC (a plain DHCP server); absent for a proxy-DHCP. */
  offeredAddress?: string;
  /** It answered as a PXE server (vendor class PXEClient or PXE vendor options). */
  pxe: boolean;
  /** The boot file it named (file field or option 67), if any. */
  bootFile?: string;
  /** The TFTP server it named (siaddr or option 66), if any. */
  nextServer?: string;
}

export interface ProbeOptions {
  /** How long to listen for offers. Default 1500 ms. */
  listenMs?: number;
  log?: Logger;
}

/** Options a PXE ROM sends: what makes a proxy-DHCP (which ignores other clients) answer. */
function pxeDiscover(mac: Buffer, xid: number): Buffer {
  const options = new Map<number, Buffer>([
    [Opt.messageType, Buffer.from([MessageType.discover])],
    [Opt.paramRequestList, Buffer.from([1, 3, 43, 54, 60, 66, 67, 97, 128, 129, 130, 131])],
    [Opt.maxMessageSize, Buffer.from([0x04, 0xec])],
    [Opt.vendorClass, Buffer.from("PXEClient:Arch:00000:UNDI:002001", "latin1")],
    [Opt.clientArch, Buffer.from([0, 0])],
    [Opt.clientNdi, Buffer.from([1, 2, 1])],
    [Opt.clientUuid, Buffer.concat([Buffer.from([0]), randomBytes(16)])],
  ]);
  const packet: DhcpPacket = {
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid,
    secs: 4,
    flags: FLAG_BROADCAST,
    ciaddr: "0.0.0.0",
    yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0",
    giaddr: "0.0.0.0",
    chaddr: Buffer.concat([mac, Buffer.alloc(10)]),
    sname: "",
    file: "",
    options,
  };
  return encodeDhcp(packet);
}

/** The offer's facts, or undefined when it is not an offer to our DISCOVER. */
export function readOffer(d: InboundDatagram, xid: number): DhcpOfferSeen | undefined {
  const decoded = decodeDhcp(d.payload);
  if (!decoded.ok) return undefined;
  const p = decoded.packet;
  if (p.op !== BOOTREPLY || p.xid !== xid) return undefined;
  if (readMessageType(p.options) !== MessageType.offer) return undefined;
  const bootFile = p.file || p.options.get(Opt.bootfileName)?.toString("latin1");
  const tftp = p.options.get(Opt.tftpServerName)?.toString("latin1");
  const pxeOptions = readPxeVendorOptions(p.options);
  return {
    server: readServerId(p.options) ?? d.srcAddress,
    ...(p.yiaddr !== "0.0.0.0" ? { offeredAddress: p.yiaddr } : {}),
    pxe: readVendorClass(p.options)?.startsWith("PXEClient") === true || pxeOptions !== undefined,
    ...(bootFile ? { bootFile: bootFile.replace(/\0+$/, "") } : {}),
    ...(p.siaddr !== "0.0.0.0" || tftp ? { nextServer: tftp || p.siaddr } : {}),
  };
}

/**
 * Sends one PXE DISCOVER (option 60 PXEClient, as a BIOS PC's ROM) out of `ifname` and
 * collects the offers that arrive within the listening time, from servers other than this
 * host. Needs CAP_NET_RAW (the daemon's raw-socket transport, bound to the interface, so the
 * broadcast leaves by that interface only). Throws when the transport cannot open.
 */
export async function probeDhcpOffers(
  ifname: string,
  address: string,
  mac: Buffer,
  opts: ProbeOptions = {},
): Promise<DhcpOfferSeen[]> {
  const xid = randomBytes(4).readUInt32BE(0);
  const own = new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((a) => a?.address),
  );
  const offers = new Map<string, DhcpOfferSeen>();
  const transport = await openDhcpTransport({
    interfaces: [{ name: ifname, address }],
    ports: [68],
    // Offers to a PC without an address are broadcast: no socket needs to hold port 68.
    reservePorts: [],
    log: opts.log ?? pino({ level: "silent" }),
    onDatagram: (d) => {
      if (d.srcPort !== 67 && d.srcPort !== 4011) return;
      const offer = readOffer(d, xid);
      // This host's own bootfleetd answers too; it is not what this check looks for.
      if (offer && !own.has(offer.server) && !offers.has(offer.server)) {
        offers.set(offer.server, offer);
      }
    },
  });
  try {
    const sent = await transport.send({
      ifname,
      srcPort: 68,
      dstAddress: "255.255.255.255",
      dstPort: 67,
      payload: pxeDiscover(mac, xid),
    });
    if (!sent) throw new Error(`could not send a DHCP DISCOVER on ${ifname}`);
    await new Promise((r) => setTimeout(r, opts.listenMs ?? 1500));
  } finally {
    await transport.close();
  }
  return [...offers.values()];
}

function describe(o: DhcpOfferSeen): string {
  const kind = o.offeredAddress
    ? `DHCP server offering ${o.offeredAddress}${o.pxe ? " with PXE options" : ""}`
    : "proxy-DHCP";
  const boot = o.bootFile
    ? `boot file "${o.bootFile}"${o.nextServer ? ` from ${o.nextServer}` : ""}`
    : o.pxe
      ? "no boot file in its offer: a PXE boot menu, the file follows on port 4011"
      : "no boot file";
  return `${o.server} (${kind}, ${boot})`;
}

/** The fix for a competing boot server, by what it is. */
export const ROGUE_FIX =
  "PCs take whichever boot offer comes first: switch PXE off on that server (dnsmasq: its `dhcp-range=...,proxy`, `pxe-service` and `dhcp-boot` lines; ISC dhcpd or Windows DHCP: options 60, 66, 67 and next-server; WDS/FOG/another bootfleet: stop its PXE responder), or move bootfleet's PCs to a segment of their own";

/** Judges what the probe saw: a server that hands PCs boot information is a competitor. */
export function judgeOffers(
  ifname: string,
  offers: DhcpOfferSeen[],
  listenMs: number,
): CheckResult {
  const name = `another proxy-DHCP on ${ifname}`;
  const rogue = offers.filter((o) => o.pxe || o.bootFile !== undefined);
  const plain = offers.filter((o) => !rogue.includes(o));
  const plainNote = plain.length
    ? `; DHCP server${plain.length > 1 ? "s" : ""} handing out addresses only (as bootfleet expects): ${plain.map((o) => o.server).join(", ")}`
    : "";
  if (!rogue.length) {
    return {
      name,
      status: "ok",
      detail: `no other server answered a PXE DISCOVER with boot information within ${listenMs} ms${plainNote}`,
    };
  }
  return {
    name,
    status: "fail",
    detail: `${rogue.length === 1 ? "a boot server answers" : `${rogue.length} boot servers answer`} PXE requests: ${rogue.map(describe).join("; ")}${plainNote}`,
    fix: ROGUE_FIX,
  };
}

function interfaceFacts(ifname: string): { address: string; mac: Buffer } | undefined {
  const addrs = networkInterfaces()[ifname];
  const v4 = addrs?.find((a) => a.family === "IPv4" && !a.internal);
  if (!v4) return undefined;
  return {
    address: v4.address,
    mac: Buffer.from(v4.mac.split(":").map((h) => Number.parseInt(h, 16))),
  };
}

/** `bootfleet doctor`'s rogue proxy-DHCP check on one boot interface (bounded by listenMs). */
export async function checkRogueProxyDhcp(
  ifname: string,
  opts: ProbeOptions = {},
): Promise<CheckResult> {
  const name = `another proxy-DHCP on ${ifname}`;
  const listenMs = opts.listenMs ?? 1500;
  const facts = interfaceFacts(ifname);
  if (!facts) {
    return {
      name,
      status: "warn",
      detail: `cannot test: ${ifname} does not exist or has no IPv4 address`,
      fix: `check [netboot] interfaces and \`ip addr show ${ifname}\``,
    };
  }
  let offers: DhcpOfferSeen[];
  try {
    offers = await probeDhcpOffers(ifname, facts.address, facts.mac, { ...opts, listenMs });
  } catch (err) {
    const message = (err as Error).message;
    const privileged = /EPERM|EACCES|CAP_NET_RAW|not permitted/i.test(message);
    return {
      name,
      status: "warn",
      detail: `cannot test: ${privileged ? "sending a DHCP DISCOVER needs root (CAP_NET_RAW)" : message}`,
      fix: privileged ? "run bootfleet doctor as root" : `check ${ifname}`,
    };
  }
  return judgeOffers(ifname, offers, listenMs);
}
