import { type ClientInfo, classifyClient } from "../../../src/netboot/dhcp/client.js";
import { decodeDhcp } from "../../../src/netboot/dhcp/packet.js";
// Builds BOOTP/DHCP bytes straight from the RFC 2131 figure 1 layout, independently of
// the codec under test, so decode tests do not check the codec against itself.

export interface RawFields {
  op?: number;
  htype?: number;
  hlen?: number;
  hops?: number;
  xid?: number;
  secs?: number;
  flags?: number;
  ciaddr?: number[];
  yiaddr?: number[];
  siaddr?: number[];
  giaddr?: number[];
  chaddr?: number[];
  /** Raw 64 bytes (or fewer, zero-filled) for sname. */
  sname?: number[];
  /** Raw 128 bytes (or fewer, zero-filled) for file. */
  file?: number[];
  cookie?: number[];
  /** Raw bytes of the options field, exactly as given (no end added). */
  options?: number[];
}

export function rawPacket(f: RawFields): Buffer {
  const b = Buffer.alloc(240 + (f.options?.length ?? 0));
  b[0] = f.op ?? 1;
  b[1] = f.htype ?? 1;
  b[2] = f.hlen ?? 6;
  b[3] = f.hops ?? 0;
  const xid = f.xid ?? 0x12345678;
  b[4] = (xid >>> 24) & 0xff;
  b[5] = (xid >>> 16) & 0xff;
  b[6] = (xid >>> 8) & 0xff;
  b[7] = xid & 0xff;
  const secs = f.secs ?? 0;
  b[8] = secs >> 8;
  b[9] = secs & 0xff;
  const flags = f.flags ?? 0;
  b[10] = flags >> 8;
  b[11] = flags & 0xff;
  b.set(f.ciaddr ?? [0, 0, 0, 0], 12);
  b.set(f.yiaddr ?? [0, 0, 0, 0], 16);
  b.set(f.siaddr ?? [0, 0, 0, 0], 20);
  b.set(f.giaddr ?? [0, 0, 0, 0], 24);
  b.set(f.chaddr ?? [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef], 28);
  b.set(f.sname ?? [], 44);
  b.set(f.file ?? [], 108);
  b.set(f.cookie ?? [99, 130, 83, 99], 236);
  b.set(f.options ?? [], 240);
  return b;
}

export function ascii(s: string): number[] {
  return [...Buffer.from(s, "latin1")];
}

/** One option as code, length, value. */
export function opt(code: number, value: number[]): number[] {
  return [code, value.length, ...value];
}

/** A PXE DISCOVER as the proxy-DHCP classifies it: a BIOS PXE ROM, or iPXE (option 175). */
export function pxeDiscover(mac: string, ipxe = false): ClientInfo & { mac: string } {
  const o = [
    ...opt(53, [1]),
    ...opt(60, ascii("PXEClient:Arch:00000:UNDI:002001")),
    ...opt(93, [0, 0]),
  ];
  if (ipxe) o.push(...opt(175, [...opt(19, [1])]));
  o.push(255);
  const decoded = decodeDhcp(
    rawPacket({
      chaddr: mac.split(":").map((h) => Number.parseInt(h, 16)),
      xid: 1,
      flags: 0x8000,
      options: o,
    }),
  );
  if (!decoded.ok) throw new Error(decoded.error);
  return classifyClient(decoded.packet) as ClientInfo & { mac: string };
}
