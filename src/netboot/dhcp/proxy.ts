// The proxy-DHCP decision (PXE 2.1 section 2.2.4, RFC 4578): whether and how to answer a
// classified request, as pure functions. The proxy never hands out an address (yiaddr is
// always 0.0.0.0): the site's DHCP server does that, this only says where to boot from.
//
// Choices made here, and why:
// - REQUEST on port 67 is ignored. On 67 a REQUEST selects the address offer of the real
//   DHCP server (option 54 names it); ACKing it would answer for a lease we do not own.
//   PXE clients that want the proxy's boot information ask for it on 4011, where every
//   REQUEST and INFORM is answered, for every architecture (iPXE and some BIOS ROMs do it).
// - INFORM on 67 is answered (ACK to ciaddr:68, RFC 2131 4.3.5) so a client that already
//   has an address can still learn its boot file; DISCOVER on 4011 is not a thing and is
//   ignored.
// - noBootFile (machine boots locally or is disabled): PXE firmware gets the PXE "local
//   boot" answer, a boot menu whose only item has type 0, and no boot file; iPXE and UEFI
//   HTTP boot get silence. Silence was the first idea, but measured on OVMF it is the slow
//   way out: with nobody offering PXE, OVMF's PXEv4 retried DISCOVER for over 30 s and
//   reached its next boot option (HTTPv4) 130 s after its first DISCOVER; given the
//   local-boot menu on 4011 (by dnsmasq, the same bytes this module sends) it printed
//   "PXE-E21: Remote boot cancelled" 4 s in and reached HTTPv4 at 88 s (fixtures README).
//   PXE BIOS ROMs read a type-0 item as "exit to the BIOS boot order" the same way, so
//   they get the menu on 67 straight away. iPXE does not wait for proxy offers (the e1000
//   ROM took the address offer within milliseconds), so silence costs it nothing, and
//   HTTP boot has no menu to read.
// - Option 43 is decided in pxeVendorOptionsFor() alone (see there).
// - The boot file goes in the `file` field when it fits (127 bytes), and in option 67 when
//   the client asked for option 67 in its parameter request list or the name does not fit.

import { Arch, type ClientInfo } from "./client.js";
import {
  encodePxeVendorOptions,
  ipv4ToBytes,
  isIpv4,
  MessageType,
  Opt,
  type PxeVendorOptions,
  readPxeVendorOptions,
} from "./options.js";
import { BOOTREPLY, type DhcpPacket } from "./packet.js";

export type ProxyPort = 67 | 4011;

export interface BootFiles {
  /** TFTP name for x86 BIOS PXE ROMs. */
  bios: string;
  /** TFTP name for x64 UEFI PXE (arch 7 and 9). */
  uefiX64: string;
  /** TFTP name for ARM64 UEFI PXE (arch 11); none: such clients are ignored. */
  uefiArm64?: string;
  /** Full http:// URL of an x64 iPXE EFI binary for UEFI HTTP boot; none: ignored. */
  httpBootUrl?: string;
}

export const DEFAULT_BOOT_FILES: BootFiles = { bios: "undionly.kpxe", uefiX64: "snponly.efi" };

export interface ProxyContext {
  /** This server's IPv4 address on the interface the request came in on. */
  serverAddress: string;
  bootFiles: BootFiles;
  /** The HTTP URL of the iPXE script for a MAC (already-iPXE clients get this). */
  ipxeScriptUrl(mac: string): string;
  /** The machine must not netboot (local boot or disabled): PXE firmware is told to boot locally, iPXE and HTTP boot get silence. */
  noBootFile?: boolean;
}

export interface ProxyRequest {
  client: ClientInfo;
  /** The UDP port the request arrived on. */
  port: ProxyPort;
  /** Where the datagram came from (IP source address and UDP source port). */
  source: { address: string; port: number };
}

export interface Destination {
  address: string;
  port: number;
  /** True for 255.255.255.255: send out of the interface the request came in on. */
  broadcast: boolean;
}

export interface ProxyReply {
  reply: DhcpPacket;
  destination: Destination;
}

export type ProxyOutcome =
  | ({ action: "reply" } & ProxyReply)
  | { action: "ignore"; reason: string };

/** Vendor range of PXE boot server types (PXE 2.1 table 2-1): not 0, which means local boot. */
export const BOOTFLEET_PXE_TYPE = 0x8000;
/** Boot menu item type that tells PXE firmware to leave PXE and boot the next device. */
export const PXE_LOCAL_BOOT_TYPE = 0;

/** The PXE "boot locally" answer: broadcast and multicast discovery off, one type-0 item, no delay. */
export const LOCAL_BOOT_VENDOR_OPTIONS: Omit<PxeVendorOptions, "raw"> = {
  discoveryControl: 3,
  bootMenu: [{ type: PXE_LOCAL_BOOT_TYPE, description: "local boot" }],
  menuPrompt: { timeout: 0, prompt: "bootfleet" },
};

/** What a BIOS ROM is told on 67 (see pxeVendorOptionsFor). */
export const BIOS_OFFER_VENDOR_OPTIONS: Omit<PxeVendorOptions, "raw"> = {
  discoveryControl: 8,
  bootMenu: [{ type: BOOTFLEET_PXE_TYPE, description: "bootfleet" }],
  menuPrompt: { timeout: 0, prompt: "bootfleet" },
};

/** The fixed option 43 values, encoded once: nearly every reply carries one of them. */
const ENCODED_VENDOR_OPTIONS = new Map<Omit<PxeVendorOptions, "raw">, Buffer>([
  [BIOS_OFFER_VENDOR_OPTIONS, encodePxeVendorOptions(BIOS_OFFER_VENDOR_OPTIONS)],
  [LOCAL_BOOT_VENDOR_OPTIONS, encodePxeVendorOptions(LOCAL_BOOT_VENDOR_OPTIONS)],
]);
const PXE_CLIENT = Buffer.from("PXEClient");
const HTTP_CLIENT = Buffer.from("HTTPClient");
const OFFER = Buffer.from([MessageType.offer]);
const ACK = Buffer.from([MessageType.ack]);
const PRINTABLE = /^[\x20-\x7e]*$/;

/**
 * Option 43 for a reply, or undefined to leave it out.
 * - Any client on 4011, iPXE included: only the boot item (71), echoed when the client
 *   sent one. The PXE boot server ACK must carry it, and iPXE drops a boot server ACK
 *   whose item type differs from the one it asked for (the e1000 ROM capture asks so).
 * - Already iPXE on 67: none (iPXE needs no PXE menu; a menu could make it run one).
 * - UEFI on 67: none, so the firmware asks again on 4011 (what dnsmasq and Pixiecore do;
 *   EDK2 sends its proxy request when 43 is absent).
 * - BIOS on 67: discovery control 8 (boot the file in this packet, no discovery), plus a
 *   one-item menu and a zero-timeout prompt, because some BIOS ROMs ignore PXE offers
 *   without sub-options 9 and 10. The item uses a vendor type so a ROM that does use the
 *   menu discovers this server instead of booting the local disk.
 * - localBoot (the machine must not netboot): LOCAL_BOOT_VENDOR_OPTIONS on 4011 and, for
 *   BIOS, on 67; UEFI on 67 still gets none, so it asks on 4011 and reads it there.
 */
export function pxeVendorOptionsFor(
  client: ClientInfo,
  port: ProxyPort,
  localBoot = false,
): Omit<PxeVendorOptions, "raw"> | undefined {
  if (localBoot) {
    if (client.isIpxe || client.isHttpBoot) return undefined;
    if (port === 4011 || client.arch === Arch.bios) return LOCAL_BOOT_VENDOR_OPTIONS;
    return undefined;
  }
  if (port === 4011) {
    const sent = readPxeVendorOptions(client.packet.options);
    return sent?.bootItem ? { bootItem: sent.bootItem } : undefined;
  }
  if (client.isIpxe) return undefined;
  if (client.isHttpBoot || client.arch !== Arch.bios) return undefined;
  return BIOS_OFFER_VENDOR_OPTIONS;
}

/** The boot file for a client, or undefined when there is nothing to give it. */
export function bootFileFor(client: ClientInfo, ctx: ProxyContext): string | undefined {
  if (client.isIpxe) return client.mac === undefined ? undefined : ctx.ipxeScriptUrl(client.mac);
  if (client.isHttpBoot) {
    return client.arch === Arch.x64Http ? ctx.bootFiles.httpBootUrl : undefined;
  }
  switch (client.arch) {
    case Arch.bios:
      return ctx.bootFiles.bios;
    case Arch.x64Efi:
    case Arch.x64EfiAlt:
      return ctx.bootFiles.uefiX64;
    case Arch.arm64Efi:
      return ctx.bootFiles.uefiArm64;
    default:
      return undefined;
  }
}

/**
 * Where the reply goes: a relayed request back to the relay (giaddr:67); a 4011 request to
 * its source; a client that already has an address (ciaddr) to ciaddr:68 (RFC 2131 4.1);
 * anything else broadcast to 255.255.255.255:68.
 */
export function replyDestination(req: ProxyRequest): Destination {
  const { client, port, source } = req;
  if (client.giaddr !== "0.0.0.0") return { address: client.giaddr, port: 67, broadcast: false };
  if (port === 4011) return { address: source.address, port: source.port, broadcast: false };
  if (client.ciaddr !== "0.0.0.0") return { address: client.ciaddr, port: 68, broadcast: false };
  return { address: "255.255.255.255", port: 68, broadcast: true };
}

function whyIgnore(req: ProxyRequest, ctx: ProxyContext): string | null {
  const { client, port } = req;
  if (!client.isRequest) return "not a BOOTREQUEST";
  if (client.mac === undefined) return "not an Ethernet client";
  if (!client.isPxe && !client.isHttpBoot) return "not a PXE or HTTP boot client";
  const mt = client.messageTypeCode;
  if (port === 67) {
    if (mt === MessageType.request) return "REQUEST on 67 belongs to the address server";
    if (mt !== MessageType.discover && mt !== MessageType.inform) {
      return `message type ${mt ?? "none"} is not answered on 67`;
    }
    if (mt === MessageType.inform && client.ciaddr === "0.0.0.0" && client.giaddr === "0.0.0.0") {
      return "INFORM without ciaddr";
    }
  } else if (mt !== MessageType.request && mt !== MessageType.inform) {
    return `message type ${mt ?? "none"} is not answered on 4011`;
  }
  if (ctx.noBootFile && (client.isIpxe || client.isHttpBoot)) {
    return "machine must not netboot (iPXE and HTTP boot fall through on silence)";
  }
  if (!isIpv4(ctx.serverAddress) || ctx.serverAddress === "0.0.0.0") {
    return "no usable server address";
  }
  return null;
}

/**
 * The last value's bytes, kept: option 54 and option 67 are the same bytes for nearly every
 * reply (one server address per interface, one boot file per architecture), and encodeDhcp
 * only reads them, so they are shared between replies like the constant options above.
 */
function lastOf<T extends string>(toBytes: (s: T) => Buffer): (s: T) => Buffer {
  let key: T | undefined;
  let bytes: Buffer = Buffer.alloc(0);
  return (s) => {
    if (s !== key) {
      bytes = toBytes(s);
      key = s;
    }
    return bytes;
  };
}
const serverIdBytes = lastOf((s: string) => ipv4ToBytes(s));
const bootFileBytes = lastOf((s: string) => Buffer.from(s, "utf8"));

/** Decides, with the reason when the answer is silence. */
export function evaluateProxy(req: ProxyRequest, ctx: ProxyContext): ProxyOutcome {
  const why = whyIgnore(req, ctx);
  if (why) return { action: "ignore", reason: why };
  const { client, port } = req;
  const localBoot = ctx.noBootFile === true;
  const bootFile = localBoot ? "" : bootFileFor(client, ctx);
  if (bootFile === undefined || (!localBoot && bootFile === "")) {
    return { action: "ignore", reason: `no boot file for ${client.archKind}` };
  }

  const p = client.packet;
  const isOffer = port === 67 && client.messageTypeCode === MessageType.discover;
  const options = new Map<number, Buffer>();
  // The constant values are shared between replies: encodeDhcp only reads them.
  options.set(Opt.messageType, isOffer ? OFFER : ACK);
  options.set(Opt.serverId, serverIdBytes(ctx.serverAddress));
  options.set(Opt.vendorClass, client.isHttpBoot ? HTTP_CLIENT : PXE_CLIENT);
  const uuid = p.options.get(Opt.clientUuid);
  if (uuid && client.uuid !== undefined) options.set(Opt.clientUuid, uuid);
  const vendor = pxeVendorOptionsFor(client, port, localBoot);
  if (vendor) {
    options.set(
      Opt.vendorSpecific,
      ENCODED_VENDOR_OPTIONS.get(vendor) ?? encodePxeVendorOptions(vendor),
    );
  }
  const fileBytes = Buffer.byteLength(bootFile, "latin1");
  const fits = fileBytes <= 127 && PRINTABLE.test(bootFile);
  const asked = p.options.get(Opt.paramRequestList)?.includes(Opt.bootfileName) ?? false;
  if (bootFile !== "" && (asked || !fits)) options.set(Opt.bootfileName, bootFileBytes(bootFile));

  const reply: DhcpPacket = {
    op: BOOTREPLY,
    htype: p.htype,
    hlen: p.hlen,
    hops: 0,
    xid: p.xid,
    secs: 0,
    flags: p.flags,
    // RFC 2131 table 3: an OFFER carries ciaddr 0; an ACK echoes the client's.
    ciaddr: isOffer ? "0.0.0.0" : p.ciaddr,
    yiaddr: "0.0.0.0",
    siaddr: ctx.serverAddress,
    giaddr: p.giaddr,
    chaddr: Buffer.from(p.chaddr),
    sname: "",
    file: fits ? bootFile : "",
    options,
  };
  return { action: "reply", reply, destination: replyDestination(req) };
}

/** The proxy decision: null to stay silent, else the reply and where to send it. */
export function decideProxyReply(req: ProxyRequest, ctx: ProxyContext): ProxyReply | null {
  const out = evaluateProxy(req, ctx);
  return out.action === "reply" ? { reply: out.reply, destination: out.destination } : null;
}
