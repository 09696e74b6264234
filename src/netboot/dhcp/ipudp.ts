// IPv4 + UDP header framing (RFC 791, RFC 768, checksums per RFC 1071), for the raw
// sockets of the DHCP transport: they receive whole IP packets and send with IP_HDRINCL.
import { writeIpv4 } from "./options.js";

export interface Ipv4UdpDatagram {
  srcAddress: string;
  dstAddress: string;
  srcPort: number;
  dstPort: number;
  ttl: number;
  /** A view into the parsed packet, not a copy. */
  payload: Buffer;
  /** false when the UDP checksum was absent or left for offload (see parseIpv4Udp). */
  checksumVerified: boolean;
}

export type DropReason =
  | "short"
  | "not-ipv4"
  | "bad-header-length"
  | "bad-total-length"
  | "bad-ip-checksum"
  | "not-udp"
  | "fragment"
  | "bad-udp-length"
  | "bad-udp-checksum";

export type ParseResult =
  | { ok: true; datagram: Ipv4UdpDatagram }
  | { ok: false; reason: DropReason };

export interface BuildIpv4Udp {
  srcAddress: string;
  dstAddress: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
  ttl?: number;
  /** IP identification; 0 lets the kernel choose one when sent with IP_HDRINCL. */
  id?: number;
}

export const IPV4_HEADER_LENGTH = 20;
export const UDP_HEADER_LENGTH = 8;
const IPPROTO_UDP = 17;
const MAX_IPV4_TOTAL_LENGTH = 0xffff;

/** One's complement sum of 16-bit big-endian words, folded to 16 bits, not complemented. */
function onesComplementSum(parts: readonly Buffer[], initial = 0): number {
  let sum = initial;
  // An odd-length part is padded with a zero byte only at the very end of the data;
  // carrying the odd byte into the next part keeps word alignment across parts.
  let pending = -1;
  for (const part of parts) {
    let i = 0;
    if (pending >= 0 && part.length > 0) {
      sum += (pending << 8) | part[0]!;
      pending = -1;
      i = 1;
    }
    for (; i + 1 < part.length; i += 2) sum += (part[i]! << 8) | part[i + 1]!;
    if (i < part.length) pending = part[i]!;
    // Folding often keeps `sum` far below 2^53 however large the packet.
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (pending >= 0) sum += pending << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The Internet checksum (RFC 1071) over the concatenation of `parts`. */
export function internetChecksum(...parts: Buffer[]): number {
  return ~onesComplementSum(parts) & 0xffff;
}

/**
 * The one's complement sum of the UDP pseudo-header (RFC 768) of `packet`, read from its
 * own IPv4 header: no pseudo-header buffer is made per datagram.
 */
function pseudoHeaderSum(packet: Buffer, udpLength: number): number {
  let sum = IPPROTO_UDP + udpLength;
  for (let i = 12; i < 20; i += 2) sum += (packet[i]! << 8) | packet[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function ipv4String(buf: Buffer, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/**
 * Reads one IPv4 packet carrying UDP, as a Linux raw socket hands it over (header fields in
 * network order, reassembled, link padding already trimmed). Never throws: anything that
 * does not follow RFC 791/768 comes back as a reason to drop it.
 *
 * A non-zero UDP checksum equal to the pseudo-header sum alone is accepted unverified: a
 * sender on the same host (veth, bridge) with checksum offload hands the packet over
 * before the checksum is filled in, and raw sockets see it in that state.
 */
export function parseIpv4Udp(packet: Buffer): ParseResult {
  if (packet.length < IPV4_HEADER_LENGTH) return { ok: false, reason: "short" };
  const versionIhl = packet[0]!;
  if (versionIhl >> 4 !== 4) return { ok: false, reason: "not-ipv4" };
  const headerLength = (versionIhl & 0x0f) * 4;
  if (headerLength < IPV4_HEADER_LENGTH || headerLength > packet.length) {
    return { ok: false, reason: "bad-header-length" };
  }
  const totalLength = packet.readUInt16BE(2);
  if (totalLength < headerLength + UDP_HEADER_LENGTH || totalLength > packet.length) {
    return { ok: false, reason: "bad-total-length" };
  }
  if (internetChecksum(packet.subarray(0, headerLength)) !== 0) {
    return { ok: false, reason: "bad-ip-checksum" };
  }
  if (packet[9] !== IPPROTO_UDP) return { ok: false, reason: "not-udp" };
  const flagsFragment = packet.readUInt16BE(6);
  const moreFragments = (flagsFragment & 0x2000) !== 0;
  if (moreFragments || (flagsFragment & 0x1fff) !== 0) return { ok: false, reason: "fragment" };

  const udp = packet.subarray(headerLength, totalLength);
  const udpLength = udp.readUInt16BE(4);
  if (udpLength < UDP_HEADER_LENGTH || udpLength > udp.length) {
    return { ok: false, reason: "bad-udp-length" };
  }
  const segment = udp.subarray(0, udpLength);
  const checksum = segment.readUInt16BE(6);
  let checksumVerified = false;
  if (checksum !== 0) {
    const ph = pseudoHeaderSum(packet, udpLength);
    if ((~onesComplementSum([segment], ph) & 0xffff) === 0) {
      checksumVerified = true;
    } else if (checksum !== ph) {
      return { ok: false, reason: "bad-udp-checksum" };
    }
  }
  return {
    ok: true,
    datagram: {
      srcAddress: ipv4String(packet, 12),
      dstAddress: ipv4String(packet, 16),
      srcPort: segment.readUInt16BE(0),
      dstPort: segment.readUInt16BE(2),
      ttl: packet[8]!,
      payload: segment.subarray(UDP_HEADER_LENGTH),
      checksumVerified,
    },
  };
}

function checkPort(name: string, port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new RangeError(`${name} out of range: ${port}`);
  }
}

function writeAddress(address: string, into: Buffer, at: number): void {
  try {
    writeIpv4(address, into, at);
  } catch {
    throw new TypeError(`not an IPv4 address: ${JSON.stringify(address)}`);
  }
}

/** A complete IPv4 packet (no options) carrying one UDP datagram, both checksums filled in. */
export function buildIpv4Udp(d: BuildIpv4Udp): Buffer {
  checkPort("srcPort", d.srcPort);
  checkPort("dstPort", d.dstPort);
  const ttl = d.ttl ?? 64;
  const id = d.id ?? 0;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 255)
    throw new RangeError(`ttl out of range: ${ttl}`);
  if (!Number.isInteger(id) || id < 0 || id > 0xffff)
    throw new RangeError(`id out of range: ${id}`);
  const udpLength = UDP_HEADER_LENGTH + d.payload.length;
  const totalLength = IPV4_HEADER_LENGTH + udpLength;
  if (totalLength > MAX_IPV4_TOTAL_LENGTH) {
    throw new RangeError(
      `UDP payload of ${d.payload.length} bytes does not fit in one IPv4 packet`,
    );
  }
  const packet = Buffer.alloc(totalLength);
  packet[0] = 0x45;
  packet.writeUInt16BE(totalLength, 2);
  packet.writeUInt16BE(id, 4);
  packet[8] = ttl;
  packet[9] = IPPROTO_UDP;
  // Written in place, no buffer per address: a reply is framed for every request.
  writeAddress(d.srcAddress, packet, 12);
  writeAddress(d.dstAddress, packet, 16);
  packet.writeUInt16BE(internetChecksum(packet.subarray(0, IPV4_HEADER_LENGTH)), 10);

  const udp = packet.subarray(IPV4_HEADER_LENGTH);
  udp.writeUInt16BE(d.srcPort, 0);
  udp.writeUInt16BE(d.dstPort, 2);
  udp.writeUInt16BE(udpLength, 4);
  d.payload.copy(udp, UDP_HEADER_LENGTH);
  const sum = ~onesComplementSum([udp], pseudoHeaderSum(packet, udpLength)) & 0xffff;
  // RFC 768: a computed zero is sent as all ones, since zero means "no checksum".
  udp.writeUInt16BE(sum === 0 ? 0xffff : sum, 6);
  return packet;
}
