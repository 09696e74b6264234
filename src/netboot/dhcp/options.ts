// DHCP options (RFC 2132) as a map from code to raw bytes, plus typed readers and writers
// for the options a netboot server meets. Readers never throw: an absent or malformed option
// reads as undefined; decodeDhcp() rejects the malformed ones that matter up front through
// checkKnownOptions(), so a reader on a decoded packet only returns undefined when absent.

/** Option code -> value. Repeated options (RFC 3396) are already concatenated. */
export type DhcpOptions = Map<number, Buffer>;

export const Opt = {
  pad: 0,
  subnetMask: 1,
  router: 3,
  hostName: 12,
  vendorSpecific: 43,
  requestedAddress: 50,
  leaseTime: 51,
  overload: 52,
  messageType: 53,
  serverId: 54,
  paramRequestList: 55,
  message: 56,
  maxMessageSize: 57,
  vendorClass: 60,
  clientId: 61,
  tftpServerName: 66,
  bootfileName: 67,
  userClass: 77,
  clientArch: 93,
  clientNdi: 94,
  clientUuid: 97,
  ipxeEncap: 175,
  end: 255,
} as const;

export const MessageType = {
  discover: 1,
  offer: 2,
  request: 3,
  decline: 4,
  ack: 5,
  nak: 6,
  release: 7,
  inform: 8,
} as const;
export type MessageTypeName = keyof typeof MessageType;

const messageTypeNames = new Map<number, MessageTypeName>(
  Object.entries(MessageType).map(([k, v]) => [v, k as MessageTypeName]),
);

/** Name of a message type code, or undefined for codes this server never handles. */
export function messageTypeName(code: number): MessageTypeName | undefined {
  return messageTypeNames.get(code);
}

// PXE 2.1 vendor sub-options carried in option 43 when option 60 is "PXEClient".
export const PxeSub = {
  mtftpAddress: 1,
  discoveryControl: 6,
  multicastAddress: 7,
  bootServers: 8,
  bootMenu: 9,
  menuPrompt: 10,
  bootItem: 71,
  end: 255,
} as const;

// iPXE encapsulated options (option 175), as listed in iPXE's include/ipxe/dhcp.h.
export const IpxeSub = {
  priority: 1,
  keepSan: 8,
  skipSanBoot: 9,
  pxeext: 16,
  iscsi: 17,
  aoe: 18,
  http: 19,
  https: 20,
  tftp: 21,
  ftp: 22,
  dns: 23,
  bzimage: 24,
  multiboot: 25,
  slam: 26,
  srp: 27,
  nbi: 32,
  pxe: 33,
  elf: 34,
  comboot: 35,
  efi: 36,
  fcoe: 37,
  vlan: 38,
  menu: 39,
  sdi: 40,
  nfs: 41,
  noPxeDhcp: 176,
  busId: 177,
  version: 235,
} as const;

/**
 * Reads a sequence of code/length/value items (the format of the options field and of the
 * encapsulated spaces 43 and 175). Pad (0) is skipped and end (255) stops. Repeats are
 * concatenated (RFC 3396). Returns an error string when an item overruns the data.
 *
 * Work is linear in the input: the pieces of a repeated option are gathered first and
 * copied once at the end. Concatenating at each repeat copied the value so far every time,
 * which made a datagram of 21,000 one-byte repeats cost 220 MB of copying.
 */
export function parseTlv(
  data: Uint8Array,
  into: DhcpOptions = new Map(),
): { ok: true; options: DhcpOptions; ended: boolean } | { ok: false; error: string } {
  // Per code: the offsets and lengths of its pieces in `data`, and their total length.
  const pieces = new Map<number, { spans: number[]; total: number }>();
  let i = 0;
  let ended = false;
  while (i < data.length) {
    const code = data[i]!;
    if (code === 0) {
      i += 1;
      continue;
    }
    if (code === 255) {
      ended = true;
      break;
    }
    if (i + 1 >= data.length) {
      return { ok: false, error: `option ${code} at offset ${i} has no length byte` };
    }
    const len = data[i + 1]!;
    if (i + 2 + len > data.length) {
      return {
        ok: false,
        error: `option ${code} at offset ${i} claims ${len} bytes but only ${data.length - i - 2} remain`,
      };
    }
    const p = pieces.get(code);
    if (p) {
      p.spans.push(i + 2, len);
      p.total += len;
    } else pieces.set(code, { spans: [i + 2, len], total: len });
    i += 2 + len;
  }
  // One copy per option, so values never share memory with the datagram they came from.
  for (const [code, { spans, total }] of pieces) {
    const before = into.get(code);
    const value = Buffer.allocUnsafe((before?.length ?? 0) + total);
    let at = 0;
    if (before) at += before.copy(value, 0);
    // Byte by byte: a view per piece (subarray) costs more than copying a short piece.
    for (let k = 0; k < spans.length; k += 2) {
      const end = spans[k]! + spans[k + 1]!;
      for (let j = spans[k]!; j < end; j++) value[at++] = data[j]!;
    }
    into.set(code, value);
  }
  return { ok: true, options: into, ended };
}

/**
 * Writes options as code/length/value items; values over 255 bytes are split into
 * consecutive items of the same code (RFC 3396). Does not write the end option.
 */
export function encodeTlv(options: Iterable<[number, Uint8Array]>): Buffer {
  const parts: Buffer[] = [];
  for (const [code, value] of options) {
    if (!Number.isInteger(code) || code <= 0 || code >= 255) {
      throw new RangeError(`option code ${code} cannot be encoded`);
    }
    if (value.length === 0) {
      parts.push(Buffer.from([code, 0]));
      continue;
    }
    for (let off = 0; off < value.length; off += 255) {
      const chunk = value.subarray(off, Math.min(off + 255, value.length));
      parts.push(Buffer.from([code, chunk.length]), Buffer.from(chunk));
    }
  }
  return Buffer.concat(parts);
}

/**
 * Checks the shape of the options whose content changes how the server answers. Returns
 * an error string for the first malformed one, or null.
 */
export function checkKnownOptions(options: DhcpOptions): string | null {
  const len = (code: number) => options.get(code)?.length;
  const mt = options.get(Opt.messageType);
  if (mt !== undefined && mt.length !== 1) {
    return `option 53 (message type) has length ${mt.length}, expected 1`;
  }
  const sid = len(Opt.serverId);
  if (sid !== undefined && sid !== 4) return `option 54 (server id) has length ${sid}, expected 4`;
  const cid = len(Opt.clientId);
  if (cid !== undefined && cid < 2) return `option 61 (client id) has length ${cid}, minimum 2`;
  const arch = len(Opt.clientArch);
  if (arch !== undefined && (arch < 2 || arch % 2 !== 0)) {
    return `option 93 (client architecture) has length ${arch}, expected a non-empty list of 2-byte types`;
  }
  const ndi = len(Opt.clientNdi);
  if (ndi !== undefined && ndi !== 3) return `option 94 (client NDI) has length ${ndi}, expected 3`;
  const uuid = options.get(Opt.clientUuid);
  if (uuid !== undefined) {
    if (uuid.length !== 17) return `option 97 (client UUID) has length ${uuid.length}, expected 17`;
    if (uuid[0] !== 0) return `option 97 (client UUID) has type ${uuid[0]}, expected 0`;
  }
  const mms = len(Opt.maxMessageSize);
  if (mms !== undefined && mms !== 2) {
    return `option 57 (max message size) has length ${mms}, expected 2`;
  }
  return null;
}

// ---- typed readers -------------------------------------------------------------------

function ascii(buf: Buffer): string {
  // Firmware pads some strings with NULs; they are not part of the value.
  return buf.toString("latin1").replace(/\0+$/, "");
}

export function readMessageType(o: DhcpOptions): number | undefined {
  const v = o.get(Opt.messageType);
  return v?.length === 1 ? v[0] : undefined;
}

export function readServerId(o: DhcpOptions): string | undefined {
  const v = o.get(Opt.serverId);
  return v?.length === 4 ? ipv4ToString(v, 0) : undefined;
}

export function readParamRequestList(o: DhcpOptions): number[] | undefined {
  const v = o.get(Opt.paramRequestList);
  return v ? [...v] : undefined;
}

export function readVendorClass(o: DhcpOptions): string | undefined {
  const v = o.get(Opt.vendorClass);
  return v ? ascii(v) : undefined;
}

/** Option 61: hardware type byte then the identifier. */
export function readClientId(o: DhcpOptions): { type: number; id: Buffer } | undefined {
  const v = o.get(Opt.clientId);
  if (!v || v.length < 2) return undefined;
  return { type: v[0]!, id: Buffer.from(v.subarray(1)) };
}

/**
 * Option 77 as sent. iPXE sends the bare string "iPXE" rather than RFC 3004 length-prefixed
 * classes, so the raw value is what is matched against.
 */
export function readUserClass(o: DhcpOptions): string | undefined {
  const v = o.get(Opt.userClass);
  return v ? ascii(v) : undefined;
}

/** Option 93: one or more 16-bit architecture types (RFC 4578). */
export function readClientArch(o: DhcpOptions): number[] | undefined {
  const v = o.get(Opt.clientArch);
  if (!v || v.length < 2 || v.length % 2 !== 0) return undefined;
  const out: number[] = [];
  for (let i = 0; i < v.length; i += 2) out.push(v.readUInt16BE(i));
  return out;
}

/** Option 94: UNDI interface type and version (RFC 4578). */
export function readClientNdi(
  o: DhcpOptions,
): { type: number; major: number; minor: number } | undefined {
  const v = o.get(Opt.clientNdi);
  if (v?.length !== 3) return undefined;
  return { type: v[0]!, major: v[1]!, minor: v[2]! };
}

/**
 * Option 97: type 0 then 16 bytes, formatted as the machine's SMBIOS UUID. Firmware copies
 * the SMBIOS bytes, whose first three fields are little-endian (SMBIOS 2.6 7.2.1): OVMF and
 * iPXE both sent 33 22 11 00 55 44 77 66 88 99 ... for a QEMU given -uuid
 * 00112233-4455-6677-8899-... (test/fixtures/dhcp). Read that way, the value is the one
 * dmidecode and the firmware setup screen show, which is what an admin will type in.
 */
export function readClientUuid(o: DhcpOptions): string | undefined {
  const v = o.get(Opt.clientUuid);
  if (v?.length !== 17 || v[0] !== 0) return undefined;
  return formatGuid(v.subarray(1));
}

/** Two lowercase hex digits per byte value: read for every request (MAC, UUID). */
export const HEX_BYTE: readonly string[] = Array.from({ length: 256 }, (_, i) =>
  i.toString(16).padStart(2, "0"),
);

/** 16 bytes as 8-4-4-4-12 hex with the first three fields little-endian (GUID layout). */
export function formatGuid(b: Uint8Array): string {
  const h = (i: number) => HEX_BYTE[b[i]!]!;
  return (
    h(3) +
    h(2) +
    h(1) +
    h(0) +
    "-" +
    h(5) +
    h(4) +
    "-" +
    h(7) +
    h(6) +
    "-" +
    h(8) +
    h(9) +
    "-" +
    h(10) +
    h(11) +
    h(12) +
    h(13) +
    h(14) +
    h(15)
  );
}

export function readOverload(o: DhcpOptions): number | undefined {
  const v = o.get(Opt.overload);
  return v?.length === 1 ? v[0] : undefined;
}

// ---- option 43 (PXE vendor sub-options) ----------------------------------------------

export interface PxeBootServerType {
  type: number;
  addresses: string[];
}
export interface PxeMenuItem {
  type: number;
  description: string;
}
export interface PxeVendorOptions {
  /** Sub-option 6 bit field: 1 no broadcast, 2 no multicast, 4 only listed servers, 8 boot file in this packet. */
  discoveryControl?: number;
  multicastAddress?: string;
  bootServers?: PxeBootServerType[];
  bootMenu?: PxeMenuItem[];
  menuPrompt?: { timeout: number; prompt: string };
  bootItem?: { type: number; layer: number };
  /** Every sub-option, including the ones above, raw. */
  raw: DhcpOptions;
}

/** Decodes option 43 as PXE sub-options; undefined when absent or not well-formed. */
export function readPxeVendorOptions(o: DhcpOptions): PxeVendorOptions | undefined {
  const v = o.get(Opt.vendorSpecific);
  if (!v) return undefined;
  return decodePxeVendorOptions(v);
}

export function decodePxeVendorOptions(v: Uint8Array): PxeVendorOptions | undefined {
  const parsed = parseTlv(v);
  if (!parsed.ok) return undefined;
  const raw = parsed.options;
  const out: PxeVendorOptions = { raw };
  const dc = raw.get(PxeSub.discoveryControl);
  if (dc?.length === 1) out.discoveryControl = dc[0]!;
  const mc = raw.get(PxeSub.multicastAddress);
  if (mc?.length === 4) out.multicastAddress = ipv4ToString(mc, 0);
  const bs = raw.get(PxeSub.bootServers);
  if (bs) {
    const servers: PxeBootServerType[] = [];
    let i = 0;
    while (i + 3 <= bs.length) {
      const type = bs.readUInt16BE(i);
      const count = bs[i + 2]!;
      if (i + 3 + count * 4 > bs.length) break;
      const addresses: string[] = [];
      for (let k = 0; k < count; k++) addresses.push(ipv4ToString(bs, i + 3 + k * 4));
      servers.push({ type, addresses });
      i += 3 + count * 4;
    }
    out.bootServers = servers;
  }
  const menu = raw.get(PxeSub.bootMenu);
  if (menu) {
    const items: PxeMenuItem[] = [];
    let i = 0;
    while (i + 3 <= menu.length) {
      const type = menu.readUInt16BE(i);
      const dlen = menu[i + 2]!;
      if (i + 3 + dlen > menu.length) break;
      items.push({ type, description: menu.subarray(i + 3, i + 3 + dlen).toString("latin1") });
      i += 3 + dlen;
    }
    out.bootMenu = items;
  }
  const prompt = raw.get(PxeSub.menuPrompt);
  if (prompt && prompt.length >= 1) {
    out.menuPrompt = { timeout: prompt[0]!, prompt: prompt.subarray(1).toString("latin1") };
  }
  const item = raw.get(PxeSub.bootItem);
  if (item?.length === 4)
    out.bootItem = { type: item.readUInt16BE(0), layer: item.readUInt16BE(2) };
  return out;
}

/** Encodes PXE sub-options for option 43, ending with sub-option 255. */
export function encodePxeVendorOptions(p: Omit<PxeVendorOptions, "raw">): Buffer {
  const items: [number, Uint8Array][] = [];
  if (p.discoveryControl !== undefined) {
    items.push([PxeSub.discoveryControl, Buffer.from([p.discoveryControl & 0xff])]);
  }
  if (p.multicastAddress !== undefined) {
    items.push([PxeSub.multicastAddress, ipv4ToBytes(p.multicastAddress)]);
  }
  if (p.bootServers !== undefined) {
    const parts: Buffer[] = [];
    for (const s of p.bootServers) {
      const head = Buffer.alloc(3);
      head.writeUInt16BE(s.type, 0);
      head[2] = s.addresses.length;
      parts.push(head, ...s.addresses.map(ipv4ToBytes));
    }
    items.push([PxeSub.bootServers, Buffer.concat(parts)]);
  }
  if (p.bootMenu !== undefined) {
    const parts: Buffer[] = [];
    for (const m of p.bootMenu) {
      const d = Buffer.from(m.description, "latin1").subarray(0, 255);
      const head = Buffer.alloc(3);
      head.writeUInt16BE(m.type, 0);
      head[2] = d.length;
      parts.push(head, d);
    }
    items.push([PxeSub.bootMenu, Buffer.concat(parts)]);
  }
  if (p.menuPrompt !== undefined) {
    items.push([
      PxeSub.menuPrompt,
      Buffer.concat([
        Buffer.from([p.menuPrompt.timeout & 0xff]),
        Buffer.from(p.menuPrompt.prompt, "latin1"),
      ]),
    ]);
  }
  if (p.bootItem !== undefined) {
    const b = Buffer.alloc(4);
    b.writeUInt16BE(p.bootItem.type, 0);
    b.writeUInt16BE(p.bootItem.layer, 2);
    items.push([PxeSub.bootItem, b]);
  }
  return Buffer.concat([encodeTlv(items), Buffer.from([PxeSub.end])]);
}

// ---- option 175 (iPXE) ---------------------------------------------------------------

export interface IpxeOptions {
  /** Feature codes present with a non-zero first byte (e.g. IpxeSub.http). */
  features: Set<number>;
  /** Sub-option 235: major.minor.patch. */
  version?: string;
  /** Sub-option 177: bus type and location, raw. */
  busId?: Buffer;
  raw: DhcpOptions;
}

/** Decodes option 175; undefined when absent or not well-formed. */
export function readIpxeOptions(o: DhcpOptions): IpxeOptions | undefined {
  const v = o.get(Opt.ipxeEncap);
  if (!v) return undefined;
  const parsed = parseTlv(v);
  if (!parsed.ok) return undefined;
  const raw = parsed.options;
  const features = new Set<number>();
  for (const [code, val] of raw) {
    if (code >= 16 && code <= 63 && val.length >= 1 && val[0] !== 0) features.add(code);
  }
  const out: IpxeOptions = { features, raw };
  const ver = raw.get(IpxeSub.version);
  if (ver?.length === 3) out.version = `${ver[0]}.${ver[1]}.${ver[2]}`;
  const bus = raw.get(IpxeSub.busId);
  if (bus) out.busId = bus;
  return out;
}

// ---- addresses -----------------------------------------------------------------------

export function ipv4ToString(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

const ipv4Re = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function parseIpv4(s: string): number[] | undefined {
  const parts = ipv4Re.exec(s)?.slice(1).map(Number);
  return parts?.every((p) => p <= 255) ? parts : undefined;
}

export function isIpv4(s: string): boolean {
  return parseIpv4(s) !== undefined;
}

export function ipv4ToBytes(s: string): Buffer {
  const parts = parseIpv4(s);
  if (!parts) throw new RangeError(`not an IPv4 address: ${s}`);
  return Buffer.from(parts);
}

/**
 * Writes dotted-quad `s` as 4 bytes at `off`, without allocating (every reply writes four
 * addresses); the same addresses as ipv4ToBytes accepts, else RangeError.
 */
export function writeIpv4(s: string, into: Uint8Array, off: number): void {
  let octet = 0;
  let digits = 0;
  let k = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46;
    if (c >= 48 && c <= 57) {
      octet = octet * 10 + (c - 48);
      if (++digits > 3) break;
    } else if (c === 46 && digits > 0 && octet <= 255 && k < 4) {
      into[off + k++] = octet;
      octet = 0;
      digits = 0;
    } else {
      k = -1;
      break;
    }
  }
  if (k !== 4) throw new RangeError(`not an IPv4 address: ${s}`);
}
