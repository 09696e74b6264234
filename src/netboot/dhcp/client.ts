// What kind of netboot client sent a request: everything the proxy decision and the boot
// session records need, read once from a decoded packet. Never throws.

import {
  type IpxeOptions,
  type MessageTypeName,
  messageTypeName,
  Opt,
  readClientArch,
  readClientUuid,
  readIpxeOptions,
  readMessageType,
  readUserClass,
  readVendorClass,
} from "./options.js";
import { BOOTREQUEST, type DhcpPacket, macOf } from "./packet.js";

/** RFC 4578 / IANA processor architecture types seen in the field. */
export const Arch = {
  bios: 0,
  ia32Efi: 6,
  x64Efi: 7,
  // RFC 4578 named 9 "EFI x86-64"; IANA later called it EBC, but x64 firmware still sends it.
  x64EfiAlt: 9,
  arm32Efi: 10,
  arm64Efi: 11,
  x86Http: 15,
  x64Http: 16,
  arm32Http: 18,
  arm64Http: 19,
} as const;

export type ArchKind =
  | "bios"
  | "ia32-efi"
  | "x64-efi"
  | "arm32-efi"
  | "arm64-efi"
  | "x86-http"
  | "x64-http"
  | "arm32-http"
  | "arm64-http"
  | "unknown";

export function archKind(arch: number): ArchKind {
  switch (arch) {
    case Arch.bios:
      return "bios";
    case Arch.ia32Efi:
      return "ia32-efi";
    case Arch.x64Efi:
    case Arch.x64EfiAlt:
      return "x64-efi";
    case Arch.arm32Efi:
      return "arm32-efi";
    case Arch.arm64Efi:
      return "arm64-efi";
    case Arch.x86Http:
      return "x86-http";
    case Arch.x64Http:
      return "x64-http";
    case Arch.arm32Http:
      return "arm32-http";
    case Arch.arm64Http:
      return "arm64-http";
    default:
      return "unknown";
  }
}

const httpArchs = new Set<number>([Arch.x86Http, Arch.x64Http, Arch.arm32Http, Arch.arm64Http]);

export interface ClientInfo {
  /** Lowercase aa:bb:cc:dd:ee:ff; undefined when the hardware is not Ethernet. */
  mac: string | undefined;
  /** Option 53 code, or undefined for plain BOOTP. */
  messageTypeCode: number | undefined;
  messageType: MessageTypeName | undefined;
  /** True for a BOOTREQUEST (op 1); replies seen on the wire are never classified as clients. */
  isRequest: boolean;
  /** Option 60 begins with "PXEClient" (iPXE sends it too). */
  isPxe: boolean;
  /** UEFI HTTP boot: option 60 begins with "HTTPClient" or the architecture is an HTTP one. */
  isHttpBoot: boolean;
  /**
   * The architecture to boot: the first of option 93, else the "Arch:NNNNN" field of option
   * 60, else 0 for a PXEClient (PXE 2.0 BIOS ROMs predate option 93); undefined otherwise.
   */
  arch: number | undefined;
  /** Every type listed in option 93 (empty when absent). */
  archs: number[];
  archKind: ArchKind;
  /** Option 175 present, or user class (option 77) exactly "iPXE". */
  isIpxe: boolean;
  ipxe: IpxeOptions | undefined;
  userClass: string | undefined;
  vendorClass: string | undefined;
  uuid: string | undefined;
  giaddr: string;
  ciaddr: string;
  xid: number;
  /** The packet this was read from, for building the reply. */
  packet: DhcpPacket;
}

function archFromVendorClass(vc: string | undefined): number | undefined {
  if (!vc) return undefined;
  const m = /^(?:PXEClient|HTTPClient):Arch:(\d{5})/.exec(vc);
  return m ? Number(m[1]) : undefined;
}

export function classifyClient(packet: DhcpPacket): ClientInfo {
  const o = packet.options;
  const vendorClass = readVendorClass(o);
  const userClass = readUserClass(o);
  const archs = readClientArch(o) ?? [];
  const isPxe = vendorClass?.startsWith("PXEClient") ?? false;
  let arch: number | undefined = archs[0] ?? archFromVendorClass(vendorClass);
  if (arch === undefined && isPxe) arch = Arch.bios;
  const isHttpBoot =
    (vendorClass?.startsWith("HTTPClient") ?? false) || (arch !== undefined && httpArchs.has(arch));
  const ipxe = readIpxeOptions(o);
  const code = readMessageType(o);
  return {
    mac: macOf(packet),
    messageTypeCode: code,
    messageType: code === undefined ? undefined : messageTypeName(code),
    isRequest: packet.op === BOOTREQUEST,
    isPxe,
    isHttpBoot,
    arch,
    archs,
    archKind: arch === undefined ? "unknown" : archKind(arch),
    isIpxe: o.has(Opt.ipxeEncap) || userClass === "iPXE",
    ipxe,
    userClass,
    vendorClass,
    uuid: readClientUuid(o),
    giaddr: packet.giaddr,
    ciaddr: packet.ciaddr,
    xid: packet.xid,
    packet,
  };
}
