// BOOTP/DHCP message codec (RFC 951, RFC 2131 section 2, RFC 2132, RFC 3396).
// decodeDhcp() takes untrusted bytes off the wire and never throws; encodeDhcp() takes a
// packet this server built and throws only on values that cannot be represented.

import {
  checkKnownOptions,
  type DhcpOptions,
  HEX_BYTE,
  ipv4ToString,
  Opt,
  parseTlv,
  writeIpv4,
} from "./options.js";

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;

/** 236 bytes of fixed header, then the 4-byte magic cookie. */
export const HEADER_LENGTH = 236;
export const MAGIC_COOKIE = 0x63825363;
/** RFC 1542 2.1: relay agents and old clients expect at least a 300-byte BOOTP message. */
export const MIN_PACKET_LENGTH = 300;
/**
 * The longest message accepted: a DHCP message in one unfragmented Ethernet frame, 1500
 * bytes of IP MTU less 20 of IPv4 and 8 of UDP header. RFC 2131 (section 2) only asks a
 * client to accept 576-byte datagrams, and a client asking before it has an address sends
 * one frame: the PXE and iPXE firmware captured in test/fixtures/dhcp send 340-412 bytes and
 * name 1472 as their own maximum (option 57). Anything longer was made by something else;
 * refusing it up front bounds the work a datagram can cost (a 63 KB one can be reassembled
 * from fragments).
 */
export const MAX_MESSAGE_LENGTH = 1472;

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** All 16 bytes of the field; the hardware address is the first hlen of them. */
  chaddr: Buffer;
  /** Server host name; "" when absent or when the field carried options (option 52). */
  sname: string;
  /** Boot file name; "" when absent or when the field carried options (option 52). */
  file: string;
  /** Options from the options field and, under option 52, from file and sname, merged. */
  options: DhcpOptions;
}

export type DecodeResult = { ok: true; packet: DhcpPacket } | { ok: false; error: string };

/** Broadcast flag (RFC 2131 figure 2): the client cannot receive unicast before it has an address. */
export const FLAG_BROADCAST = 0x8000;

function cString(b: Uint8Array): string {
  // The usual case, an empty field (every PXE DISCOVER), without a copy or a search.
  if (b[0] === 0) return "";
  const nul = b.indexOf(0);
  return Buffer.from(nul < 0 ? b : b.subarray(0, nul)).toString("latin1");
}

export function decodeDhcp(buf: Uint8Array): DecodeResult {
  if (!(buf instanceof Uint8Array)) return { ok: false, error: "not a byte buffer" };
  if (buf.length < HEADER_LENGTH + 4) {
    return {
      ok: false,
      error: `too short: ${buf.length} bytes, a BOOTP header and magic cookie need ${HEADER_LENGTH + 4}`,
    };
  }
  if (buf.length > MAX_MESSAGE_LENGTH) {
    return {
      ok: false,
      error: `too long: ${buf.length} bytes, a DHCP message in one Ethernet frame has at most ${MAX_MESSAGE_LENGTH}`,
    };
  }
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const op = b[0]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) return { ok: false, error: `bad op ${op}` };
  const hlen = b[2]!;
  if (hlen > 16) return { ok: false, error: `hardware address length ${hlen} exceeds 16` };
  const cookie = b.readUInt32BE(HEADER_LENGTH);
  if (cookie !== MAGIC_COOKIE) {
    return { ok: false, error: `bad magic cookie 0x${cookie.toString(16).padStart(8, "0")}` };
  }

  const snameField = b.subarray(44, 108);
  const fileField = b.subarray(108, 236);
  const main = parseTlv(b.subarray(HEADER_LENGTH + 4));
  if (!main.ok) return { ok: false, error: `options field: ${main.error}` };
  const options = main.options;

  // Option 52 is only honoured in the options field (RFC 2131 4.1); the order options, file,
  // sname is RFC 3396 section 5's, so split options concatenate in that order.
  let overload = 0;
  const ov = options.get(Opt.overload);
  if (ov !== undefined) {
    if (ov.length !== 1 || ov[0]! < 1 || ov[0]! > 3) {
      return { ok: false, error: `option 52 (overload) malformed: ${ov.toString("hex")}` };
    }
    overload = ov[0]!;
  }
  if (overload & 1) {
    const r = parseTlv(fileField, options);
    if (!r.ok) return { ok: false, error: `file field (overloaded): ${r.error}` };
  }
  if (overload & 2) {
    const r = parseTlv(snameField, options);
    if (!r.ok) return { ok: false, error: `sname field (overloaded): ${r.error}` };
  }
  // A repeat of 52 inside file/sname would have been concatenated onto the real one.
  if (overload !== 0) options.set(Opt.overload, Buffer.from([overload]));

  const bad = checkKnownOptions(options);
  if (bad) return { ok: false, error: bad };

  return {
    ok: true,
    packet: {
      op,
      htype: b[1]!,
      hlen,
      hops: b[3]!,
      xid: b.readUInt32BE(4),
      secs: b.readUInt16BE(8),
      flags: b.readUInt16BE(10),
      ciaddr: ipv4ToString(b, 12),
      yiaddr: ipv4ToString(b, 16),
      siaddr: ipv4ToString(b, 20),
      giaddr: ipv4ToString(b, 24),
      chaddr: Buffer.from(b.subarray(28, 44)),
      sname: overload & 2 ? "" : cString(snameField),
      file: overload & 1 ? "" : cString(fileField),
      options,
    },
  };
}

/**
 * Encodes a packet. Option 53 goes first (some ROMs look for it there), then the others in
 * map order, then end, padded to MIN_PACKET_LENGTH. Never uses option 52: a reply that
 * does not fit is a bug in whoever built it. Throws RangeError on unrepresentable fields
 * (sname over 63 bytes, file over 127, a bad address).
 */
export function encodeDhcp(p: DhcpPacket): Buffer {
  if (p.chaddr.length > 16) throw new RangeError("chaddr longer than 16 bytes");
  // latin1: one byte per character, so a string's length is its encoded length.
  if (p.sname.length > 63) throw new RangeError(`sname is ${p.sname.length} bytes, at most 63 fit`);
  if (p.file.length > 127) throw new RangeError(`file is ${p.file.length} bytes, at most 127 fit`);
  // One buffer, sized first: a reply is encoded for every request.
  let optionBytes = 1; // end
  for (const [code, v] of p.options) {
    if (code === Opt.overload) continue;
    if (!Number.isInteger(code) || code <= 0 || code >= 255) {
      throw new RangeError(`option code ${code} cannot be encoded`);
    }
    optionBytes += v.length + 2 * Math.max(1, Math.ceil(v.length / 255));
  }
  const length = Math.max(MIN_PACKET_LENGTH, HEADER_LENGTH + 4 + optionBytes);
  const out = Buffer.alloc(length);
  out[0] = p.op;
  out[1] = p.htype;
  out[2] = p.hlen;
  out[3] = p.hops;
  out.writeUInt32BE(p.xid >>> 0, 4);
  out.writeUInt16BE(p.secs, 8);
  out.writeUInt16BE(p.flags, 10);
  writeIpv4(p.ciaddr, out, 12);
  writeIpv4(p.yiaddr, out, 16);
  writeIpv4(p.siaddr, out, 20);
  writeIpv4(p.giaddr, out, 24);
  p.chaddr.copy(out, 28);
  out.write(p.sname, 44, "latin1");
  out.write(p.file, 108, "latin1");
  out.writeUInt32BE(MAGIC_COOKIE, HEADER_LENGTH);
  let at = HEADER_LENGTH + 4;
  const put = (code: number, v: Uint8Array) => {
    // Values over 255 bytes are split into consecutive items of the same code (RFC 3396).
    let off = 0;
    do {
      const n = Math.min(255, v.length - off);
      out[at++] = code;
      out[at++] = n;
      out.set(v.subarray(off, off + n), at);
      at += n;
      off += n;
    } while (off < v.length);
  };
  const mt = p.options.get(Opt.messageType);
  if (mt) put(Opt.messageType, mt);
  for (const [code, v] of p.options) {
    if (code === Opt.messageType || code === Opt.overload) continue;
    put(code, v);
  }
  out[at] = Opt.end;
  return out;
}

/** The client's MAC as lowercase aa:bb:cc:dd:ee:ff, or undefined when it is not Ethernet. */
export function macOf(p: Pick<DhcpPacket, "htype" | "hlen" | "chaddr">): string | undefined {
  if (p.htype !== 1 || p.hlen !== 6) return undefined;
  return formatMac(p.chaddr.subarray(0, 6));
}

export function formatMac(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += i === 0 ? HEX_BYTE[b[i]!] : `:${HEX_BYTE[b[i]!]}`;
  return s;
}

/** Parses aa:bb:cc:dd:ee:ff (or with dashes, any case) into 6 bytes. */
export function parseMac(s: string): Buffer | undefined {
  const m =
    /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(
      s,
    );
  if (!m) return undefined;
  return Buffer.from(m.slice(1).map((h) => Number.parseInt(h, 16)));
}
