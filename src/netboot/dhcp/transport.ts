// The proxy-DHCP UDP transport: moves raw DHCP payloads and knows which interface each
// one came in on. Node's dgram cannot say that (no IP_PKTINFO, no SO_BINDTODEVICE), and a
// PXE DISCOVER comes from 0.0.0.0 to 255.255.255.255, so neither address tells. One raw
// IPPROTO_UDP socket per configured interface, bound to that device, sees every UDP
// datagram delivered on it; replies go out through the same socket with our own IPv4+UDP
// header, so a limited broadcast leaves by that device only.
import dgram from "node:dgram";
import { createRequire } from "node:module";
import { isIPv4 } from "node:net";
import { networkInterfaces } from "node:os";
import type { Logger } from "pino";
import { buildIpv4Udp, type DropReason, parseIpv4Udp } from "./ipudp.js";
import { MAX_MESSAGE_LENGTH } from "./packet.js";
import { type SendChannel, SendQueue } from "./send-queue.js";

export interface DhcpInterface {
  name: string;
  /** The IPv4 address of that interface: source of replies, reported as localAddress. */
  address: string;
}

export interface InboundDatagram {
  ifname: string;
  localAddress: string;
  srcAddress: string;
  srcPort: number;
  dstAddress: string;
  dstPort: number;
  payload: Buffer;
}

export interface OutboundDatagram {
  ifname: string;
  srcPort: number;
  dstAddress: string;
  dstPort: number;
  payload: Buffer;
}

export interface DhcpTransportStats {
  /** UDP datagrams read from the raw sockets, whatever their port. */
  received: number;
  /** Handed to onDatagram. */
  delivered: number;
  /** Well-formed but for a port we do not serve (TFTP, our own replies looped back, ...). */
  ignored: number;
  /** Malformed IPv4/UDP framing, by reason. */
  /**
   * Dropped unread, by reason: malformed IPv4/UDP framing, or "oversize", a payload for a
   * served port longer than any DHCP message (MAX_MESSAGE_LENGTH).
   */
  dropped: Partial<Record<DropReason | "oversize", number>>;
  sent: number;
  sendErrors: number;
  /** Replies refused because the send queue was full (also counted in sendErrors). */
  queueFull: number;
  /** The raw sockets' receive buffer as the kernel holds it (doubled), the smallest of them. */
  receiveBufferBytes: number;
}

export interface DhcpTransportOptions {
  interfaces: DhcpInterface[];
  /** Destination ports handed to onDatagram. Default 67 and 4011. */
  ports?: number[];
  /**
   * Ports held with an ordinary socket on 0.0.0.0 (SO_REUSEADDR) and drained, so the kernel
   * does not answer unicast requests with ICMP port-unreachable. Default: `ports` without
   * 67. Linux hands a unicast datagram to the newest of several SO_REUSEADDR sockets, so a
   * socket held on 67 would take renewals away from a DHCP server on the same host; and a
   * broadcast to 67, what PXE clients send there, never draws an ICMP error.
   */
  reservePorts?: number[];
  /**
   * Pacing, so a burst of replies does not overrun a client's small receive buffer (PXE
   * ROMs keep a few to a few dozen frames; every broadcast OFFER reaches every ROM on the
   * segment): at most `sendBurst` replies back to back, then `sendBurst` per
   * `sendIntervalMs` on average (a token bucket on the clock). 0 sends without pacing.
   * Default 1 ms.
   */
  sendIntervalMs?: number;
  /**
   * Default 32: a window of 32 requests in flight is answered without waiting, and a storm
   * is held to 32 replies a millisecond. The first pacing (8, then a 1 ms timer) capped the
   * rate at what a late timer allowed: ~590 offers/s with a pause after each reply, ~2,000
   * with 8 per pause (bench/dhcp), well under what the wire and the ROMs take.
   */
  sendBurst?: number;
  /**
   * Replies waiting to be sent at most; a reply beyond that is refused (send() resolves
   * false). A flood of requests must not grow memory without end, and a reply that would
   * wait behind thousands is stale before it leaves: the client asks again. Default 1024,
   * room for a few hundred PCs switched on together (each asks on 67, then 4011).
   */
  maxQueuedSends?: number;
  log: Logger;
  onDatagram: (d: InboundDatagram) => void;
}

export interface DhcpTransport {
  /**
   * Queues one datagram; resolves true once the kernel took it, false when it could not be
   * sent (the reason is logged). Never rejects, so a reply can be fired from a receive
   * handler without a catch.
   */
  send(d: OutboundDatagram): Promise<boolean>;
  stats(): DhcpTransportStats;
  /** Sends what is queued (bounded wait), then closes every socket. */
  close(): Promise<void>;
}

// raw-socket ships no typings; this is the part of its API used here.
interface RawSocket {
  on(event: "message", listener: (packet: Buffer, source: string) => void): this;
  on(event: "error", listener: (err: Error) => void): this;
  on(event: "close", listener: () => void): this;
  setOption(level: number, option: number, value: number): void;
  setOption(level: number, option: number, value: Buffer, length: number): void;
  getOption(level: number, option: number, value: Buffer, length: number): number;
  send(
    buf: Buffer,
    offset: number,
    length: number,
    address: string,
    cb: (err: Error | null, bytes: number) => void,
  ): this;
  close(): this;
  /**
   * raw-socket's native socket (1.8: `SocketWrap`): `send` is one sendto that calls back
   * before it returns, `recv` one recvfrom into `buffer`; both throw the socket's error
   * (EAGAIN included: the socket is non-blocking). Used directly, since the public
   * `send` waits for a writable poll per packet and the public "message" reads one
   * datagram per poll.
   */
  wrap?: {
    send(
      buf: Buffer,
      offset: number,
      length: number,
      address: string,
      cb: (bytes: number) => void,
    ): unknown;
    recv(buf: Buffer, cb: (buf: Buffer, bytes: number, source: string) => void): unknown;
  };
  buffer?: Buffer;
}
interface RawSocketModule {
  createSocket(opts: { addressFamily?: number; protocol?: number; bufferSize?: number }): RawSocket;
  AddressFamily: { IPv4: number };
  Protocol: { UDP: number };
  SocketLevel: { SOL_SOCKET: number; IPPROTO_IP: number };
  SocketOption: Record<
    "SO_BINDTODEVICE" | "SO_BROADCAST" | "SO_RCVBUF" | "SO_SNDBUF" | "IP_HDRINCL",
    number
  >;
}

const DEFAULT_PORTS = [67, 4011];
/**
 * The raw sockets' receive buffer. They see every UDP datagram on the device, a boot
 * storm's TFTP acknowledgements included (each a kernel buffer of ~1 KB): at 1 MiB (2 MiB
 * as the kernel counts it) a 500-PC storm filled it whenever the event loop was busy for
 * ~100 ms, dropped 700-2,800 frames, DISCOVERs among them, and each PC that lost one waited
 * 4 s to send it again (bench/storm). Set past rmem_max (212,992 on a stock Debian) with
 * CAP_NET_ADMIN, which the systemd unit grants; without it, as far as rmem_max allows.
 */
const RECEIVE_BUFFER_BYTES = 8 << 20;
/** Linux's SO_RCVBUFFORCE (asm-generic/socket.h): SO_RCVBUF past rmem_max, for CAP_NET_ADMIN. */
const SO_RCVBUFFORCE = 33;
// raw-socket reads into one buffer of this size; a whole IPv4 packet always fits.
const READ_BUFFER_BYTES = 0xffff;
const DEFAULT_MAX_QUEUED_SENDS = 1024;
const MAX_IPV4_HEADER = 60;

/** The UDP destination port of an IPv4 packet, unchecked (-1 when it cannot be there). */
function peekDstPort(packet: Buffer): number {
  const at = (packet[0]! & 0x0f) * 4 + 2;
  return at + 2 <= packet.length ? packet.readUInt16BE(at) : -1;
}
const CLOSE_DRAIN_MS = 1000;
const NO_PERMISSION = /not permitted|permission denied/i;
const NO_DEVICE = /no such device/i;

let rawModule: RawSocketModule | undefined;
function loadRaw(): RawSocketModule {
  rawModule ??= createRequire(import.meta.url)("raw-socket") as RawSocketModule;
  return rawModule;
}

interface Port extends SendChannel {
  iface: DhcpInterface;
  /** iface.address as the 32-bit number an IPv4 header carries. */
  addressNumber: number;
  socket: RawSocket;
}

/** Datagrams read in one readable event at most, so a flood cannot hold the loop. */
const MAX_READS_PER_EVENT = 64;
const WOULD_BLOCK = /temporarily unavailable/i;
const ignoreBytes = () => {};

/** The interface's socket as the send queue's channel, through raw-socket's native send. */
function portFor(iface: DhcpInterface, socket: RawSocket): Port {
  const native = socket.wrap;
  if (typeof native?.send !== "function" || typeof native.recv !== "function" || !socket.buffer) {
    socket.close();
    throw new Error(
      "DHCP transport: the installed raw-socket has no native send/recv (package.json pins the version this was written for)",
    );
  }
  return {
    iface,
    addressNumber: iface.address
      .split(".")
      .reduce((n, octet) => ((n << 8) | Number(octet)) >>> 0, 0),
    socket,
    open: true,
    sendNow: (packet, address) => {
      native.send(packet, 0, packet.length, address, ignoreBytes);
    },
  };
}

function checkConfig(opts: DhcpTransportOptions): void {
  if (opts.interfaces.length === 0) throw new Error("DHCP transport: no interface configured");
  const names = new Set<string>();
  for (const iface of opts.interfaces) {
    if (!iface.name || iface.name.length > 15 || /[\s/]/.test(iface.name)) {
      throw new Error(`DHCP transport: invalid interface name ${JSON.stringify(iface.name)}`);
    }
    if (names.has(iface.name)) {
      throw new Error(`DHCP transport: interface "${iface.name}" is configured twice`);
    }
    names.add(iface.name);
    if (!isIPv4(iface.address) || iface.address === "0.0.0.0") {
      throw new Error(
        `DHCP transport: interface "${iface.name}" needs its own IPv4 address, got ${JSON.stringify(iface.address)}`,
      );
    }
  }
  for (const port of [...(opts.ports ?? []), ...(opts.reservePorts ?? [])]) {
    if (!Number.isInteger(port) || port < 1 || port > 0xffff) {
      throw new Error(`DHCP transport: port out of range: ${port}`);
    }
  }
}

function openRawSocket(raw: RawSocketModule, iface: DhcpInterface): RawSocket {
  let socket: RawSocket;
  try {
    socket = raw.createSocket({
      addressFamily: raw.AddressFamily.IPv4,
      protocol: raw.Protocol.UDP,
      bufferSize: READ_BUFFER_BYTES,
    });
  } catch (err) {
    const msg = (err as Error).message;
    if (NO_PERMISSION.test(msg)) {
      throw new Error(
        `DHCP transport: cannot open a raw socket for interface "${iface.name}" (${msg}): ` +
          "bootfleetd needs CAP_NET_RAW for proxy-DHCP. Run it as root, or give the service " +
          "AmbientCapabilities=CAP_NET_RAW CAP_NET_BIND_SERVICE, or leave DHCP off.",
      );
    }
    throw new Error(
      `DHCP transport: cannot open a raw socket for interface "${iface.name}": ${msg}`,
    );
  }
  try {
    const { SOL_SOCKET, IPPROTO_IP } = raw.SocketLevel;
    const opt = raw.SocketOption;
    const name = Buffer.from(`${iface.name}\0`);
    socket.setOption(SOL_SOCKET, opt.SO_BINDTODEVICE, name, name.length);
    socket.setOption(IPPROTO_IP, opt.IP_HDRINCL, 1);
    socket.setOption(SOL_SOCKET, opt.SO_BROADCAST, 1);
    // Raw sockets see every UDP datagram on the device (TFTP included): a roomy buffer
    // keeps a DHCP request from being dropped behind them.
    try {
      socket.setOption(SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES);
    } catch {
      socket.setOption(SOL_SOCKET, opt.SO_RCVBUF, RECEIVE_BUFFER_BYTES);
    }
  } catch (err) {
    socket.close();
    const msg = (err as Error).message;
    if (NO_DEVICE.test(msg)) {
      throw new Error(
        `DHCP transport: interface "${iface.name}" does not exist (${msg}). ` +
          "Check the configured DHCP interfaces against `ip -br link`.",
      );
    }
    if (NO_PERMISSION.test(msg)) {
      throw new Error(
        `DHCP transport: cannot bind a raw socket to interface "${iface.name}" (${msg}): ` +
          "bootfleetd needs CAP_NET_RAW for proxy-DHCP.",
      );
    }
    throw new Error(`DHCP transport: cannot set up interface "${iface.name}": ${msg}`);
  }
  return socket;
}

async function reservePort(port: number, log: Logger): Promise<dgram.Socket | undefined> {
  const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
  // Only here so the port is bound; the raw socket already sees the same datagrams.
  socket.on("message", () => {});
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ port, address: "0.0.0.0", exclusive: true }, () => {
        socket.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    socket.close();
    const e = err as NodeJS.ErrnoException;
    if (e.code === "EADDRINUSE") {
      // Someone holds it without SO_REUSEADDR; either way the kernel will not answer with
      // port-unreachable, and our raw sockets still see the traffic.
      log.warn(
        { port },
        "DHCP transport: port held by another process; receiving through raw sockets only",
      );
      return undefined;
    }
    if (e.code === "EACCES") {
      throw new Error(
        `DHCP transport: cannot bind UDP port ${port} (EACCES): bootfleetd needs CAP_NET_BIND_SERVICE, or leave ${port} out of the reserved ports`,
      );
    }
    throw new Error(`DHCP transport: cannot bind UDP port ${port}: ${e.message}`);
  }
  socket.on("error", (err) => log.warn({ err, port }, "DHCP transport: error on reserved port"));
  return socket;
}

function warnIfAddressMissing(iface: DhcpInterface, log: Logger): void {
  const addrs = networkInterfaces()[iface.name] ?? [];
  if (!addrs.some((a) => a.family === "IPv4" && a.address === iface.address)) {
    log.warn(
      { ifname: iface.name, address: iface.address },
      "DHCP transport: the interface does not carry this address now; replies will name it anyway",
    );
  }
}

/** What receiving needs: which datagrams to hand on, and to whom. */
interface Receiver {
  servedPorts: Set<number>;
  ownAddresses: Set<string>;
  stats: DhcpTransportStats;
  log: Logger;
  onDatagram: (d: InboundDatagram) => void;
}

/**
 * Whether the packet is one this host sent (its IPv4 source is the interface's own
 * address), read without parsing it. Every broadcast reply comes back to the raw socket
 * through the kernel's loopback of broadcasts: one read per reply sent, which must not
 * cost a checksum and a parse each as well.
 */
function fromSelf(port: Port, packet: Buffer): boolean {
  return packet.length >= 20 && packet.readUInt32BE(12) === port.addressNumber;
}

function receive(r: Receiver, port: Port, packet: Buffer): void {
  r.stats.received++;
  // Longer than any IP header (60) + UDP header + DHCP message: looked at no further, not
  // even checksummed, so a flood of 63 KB datagrams costs a length test each.
  if (packet.length > MAX_IPV4_HEADER + 8 + MAX_MESSAGE_LENGTH) {
    if (r.servedPorts.has(peekDstPort(packet))) {
      r.stats.dropped.oversize = (r.stats.dropped.oversize ?? 0) + 1;
    } else r.stats.ignored++;
    return;
  }
  if (fromSelf(port, packet)) {
    r.stats.ignored++;
    return;
  }
  const parsed = parseIpv4Udp(packet);
  if (!parsed.ok) {
    r.stats.dropped[parsed.reason] = (r.stats.dropped[parsed.reason] ?? 0) + 1;
    r.log.debug(
      { ifname: port.iface.name, reason: parsed.reason },
      "DHCP transport: dropped datagram",
    );
    return;
  }
  const d = parsed.datagram;
  // Our own broadcasts come back to us through the kernel's loopback of broadcasts.
  if (!r.servedPorts.has(d.dstPort) || r.ownAddresses.has(d.srcAddress)) {
    r.stats.ignored++;
    return;
  }
  if (d.payload.length > MAX_MESSAGE_LENGTH) {
    r.stats.dropped.oversize = (r.stats.dropped.oversize ?? 0) + 1;
    return;
  }
  r.stats.delivered++;
  const inbound: InboundDatagram = {
    ifname: port.iface.name,
    localAddress: port.iface.address,
    srcAddress: d.srcAddress,
    srcPort: d.srcPort,
    dstAddress: d.dstAddress,
    dstPort: d.dstPort,
    // raw-socket reuses its read buffer for the next packet: the consumer gets its own copy.
    payload: Buffer.from(d.payload),
  };
  try {
    r.onDatagram(inbound);
  } catch (err) {
    r.log.error({ err, ifname: inbound.ifname }, "DHCP transport: datagram handler threw");
  }
}

/**
 * Reads what else is queued on the socket now. raw-socket's "message" reads one datagram
 * per readable poll, so 32 requests waiting cost 32 event-loop turns (and its poll reports
 * readable before writable, so replies waited behind them). An error other than "nothing
 * more" is left for the next poll, where raw-socket reports it as usual.
 */
function readMore(r: Receiver, port: Port): void {
  const native = port.socket.wrap!;
  const buffer = port.socket.buffer!;
  let bytes = 0;
  const got = (_b: Buffer, n: number) => {
    bytes = n;
  };
  for (let n = 1; n < MAX_READS_PER_EVENT && port.open; n++) {
    try {
      native.recv(buffer, got);
    } catch (err) {
      if (!WOULD_BLOCK.test((err as Error).message)) {
        r.log.debug({ err, ifname: port.iface.name }, "DHCP transport: read failed");
      }
      return;
    }
    receive(r, port, buffer.subarray(0, bytes));
  }
}

// Listeners go on as each socket opens: it is polled from creation, and an "error"
// emitted with no listener would throw out of the event loop.
function attach(r: Receiver, port: Port): void {
  port.socket.on("message", (packet) => {
    receive(r, port, packet);
    readMore(r, port);
  });
  port.socket.on("error", (err) => {
    r.log.error({ err, ifname: port.iface.name }, "DHCP transport: raw socket error");
  });
  port.socket.on("close", () => {
    if (port.open) {
      port.open = false;
      r.log.error(
        { ifname: port.iface.name },
        "DHCP transport: raw socket closed; interface no longer served",
      );
    }
  });
}

/** Opens every interface's raw socket and the reserved ports; closes all of them on failure. */
async function openSockets(
  opts: DhcpTransportOptions,
  receiver: Receiver,
  reserved: number[],
): Promise<{ sockets: Map<string, Port>; reservedSockets: dgram.Socket[]; closeAll(): void }> {
  const raw = loadRaw();
  const sockets = new Map<string, Port>();
  const reservedSockets: dgram.Socket[] = [];
  const closeAll = () => {
    for (const p of sockets.values()) {
      if (p.open) {
        p.open = false;
        p.socket.close();
      }
    }
    for (const s of reservedSockets) s.close();
  };
  try {
    for (const iface of opts.interfaces) {
      const socket = openRawSocket(raw, iface);
      const size = Buffer.alloc(4);
      socket.getOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_RCVBUF, size, 4);
      receiver.stats.receiveBufferBytes = Math.min(
        receiver.stats.receiveBufferBytes,
        size.readInt32LE(0),
      );
      const port = portFor(iface, socket);
      sockets.set(iface.name, port);
      attach(receiver, port);
      warnIfAddressMissing(iface, opts.log);
    }
    for (const p of reserved) {
      const s = await reservePort(p, opts.log);
      if (s) reservedSockets.push(s);
    }
  } catch (err) {
    closeAll();
    throw err;
  }
  return { sockets, reservedSockets, closeAll };
}

/**
 * Opens one raw socket per interface (CAP_NET_RAW) and holds the reserved ports. Throws a
 * message naming the interface and the fix when an interface is missing or the process
 * lacks the capability; nothing stays open after a failed start.
 */
export async function openDhcpTransport(opts: DhcpTransportOptions): Promise<DhcpTransport> {
  checkConfig(opts);
  const { log } = opts;
  const servedPorts = new Set(opts.ports ?? DEFAULT_PORTS);
  const stats: DhcpTransportStats = {
    received: 0,
    delivered: 0,
    ignored: 0,
    dropped: {},
    sent: 0,
    sendErrors: 0,
    queueFull: 0,
    receiveBufferBytes: Number.POSITIVE_INFINITY,
  };
  const { sockets, reservedSockets, closeAll } = await openSockets(
    opts,
    {
      servedPorts,
      ownAddresses: new Set(opts.interfaces.map((i) => i.address)),
      stats,
      log,
      onDatagram: opts.onDatagram,
    },
    opts.reservePorts ?? [...servedPorts].filter((p) => p !== 67),
  );
  const queue = new SendQueue({
    intervalMs: opts.sendIntervalMs ?? 1,
    burst: Math.max(1, opts.sendBurst ?? 32),
    maxQueued: Math.max(1, opts.maxQueuedSends ?? DEFAULT_MAX_QUEUED_SENDS),
    log,
    stats,
  });
  let closing = false;

  const send = (d: OutboundDatagram): Promise<boolean> => {
    // Made only for a log line: most replies never need one.
    const label = () => `${d.ifname} :${d.srcPort} -> ${d.dstAddress}:${d.dstPort}`;
    const fail = (why: string) => {
      stats.sendErrors++;
      log.warn({ datagram: label() }, `DHCP transport: not sent: ${why}`);
      return Promise.resolve(false);
    };
    if (closing) return fail("transport closed");
    const port = sockets.get(d.ifname);
    if (!port) return fail(`interface "${d.ifname}" is not configured`);
    let packet: Buffer;
    try {
      packet = buildIpv4Udp({
        srcAddress: port.iface.address,
        dstAddress: d.dstAddress,
        srcPort: d.srcPort,
        dstPort: d.dstPort,
        payload: d.payload,
      });
    } catch (err) {
      return fail((err as Error).message);
    }
    return new Promise<boolean>((resolve) => {
      if (!queue.push({ channel: port, packet, dstAddress: d.dstAddress, label, resolve })) {
        resolve(false);
      }
    });
  };

  log.info(
    {
      interfaces: opts.interfaces.map((i) => `${i.name}=${i.address}`),
      ports: [...servedPorts],
      reserved: reservedSockets.map((s) => s.address().port),
    },
    "DHCP transport open",
  );

  return {
    send,
    stats: () => ({ ...stats, dropped: { ...stats.dropped } }),
    close: async () => {
      if (closing) return;
      closing = true;
      // Whatever did not leave in time is reported as not sent.
      await queue.drain(CLOSE_DRAIN_MS);
      closeAll();
    },
  };
}
