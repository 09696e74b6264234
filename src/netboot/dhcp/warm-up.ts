// Runs the proxy-DHCP's per-request code on made-up requests once at start, before any
// real request comes. A daemon that has just started runs that code in V8's interpreter:
// its first few thousand requests cost many times what later ones do (a fresh process:
// ~250 µs of CPU per request at first, ~10 µs once V8 has compiled the path; bench/dhcp's
// "new" pass, the first 1,000 DISCOVERs after start, cost 0.46 ms of CPU each against 0.17
// for the same requests again). dnsmasq is compiled ahead of time and has no such start;
// this gives bootfleet the same, for a few hundred milliseconds of CPU once, at start.
// Nothing is sent and nothing is recorded: the daemon's policy is not asked (it would write
// the made-up MAC down as a discovered machine), a fixed one stands in for it.

import { buildIpv4Udp, parseIpv4Udp } from "./ipudp.js";
import { MessageType, Opt } from "./options.js";
import { BOOTREQUEST, type DhcpPacket, decodeDhcp, encodeDhcp, FLAG_BROADCAST } from "./packet.js";
import type { BootFiles, ProxyPort } from "./proxy.js";
import { type ClientPolicy, decide } from "./server.js";

/**
 * Rounds over the sample requests: enough for V8 to compile the path with its optimising
 * compiler (measured: a fresh process reaches its steady cost per request after ~3,500
 * requests). Bounded in time as well, so an overloaded host does not hold the start long.
 */
export const WARM_UP_ROUNDS = 1500;
export const WARM_UP_BUDGET_MS = 1500;

/** A MAC no PC has: 00:00:5e:00:53:xx is set aside for documentation (RFC 7042 2.1.1). */
const SAMPLE_MAC = [0x00, 0x00, 0x5e, 0x00, 0x53, 0x01];

interface Sample {
  port: ProxyPort;
  frame: Buffer;
}

/** The requests firmware sends most: PXE BIOS and UEFI DISCOVERs, UEFI's 4011 REQUEST, iPXE. */
function samples(serverAddress: string): Sample[] {
  const uuid = Buffer.from([0, ...Array.from({ length: 16 }, (_, i) => i)]);
  const prl = Buffer.from([1, 3, 43, 54, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135]);
  const request = (
    type: number,
    arch: number,
    extra: [number, Buffer][] = [],
    ciaddr = "0.0.0.0",
  ): DhcpPacket => ({
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0x5eed0001,
    secs: 4,
    flags: FLAG_BROADCAST,
    ciaddr,
    yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0",
    giaddr: "0.0.0.0",
    chaddr: Buffer.from([...SAMPLE_MAC, ...new Array<number>(10).fill(0)]),
    sname: "",
    file: "",
    options: new Map<number, Buffer>([
      [Opt.messageType, Buffer.from([type])],
      [Opt.maxMessageSize, Buffer.from([0x05, 0xc0])],
      [Opt.paramRequestList, prl],
      [Opt.clientUuid, uuid],
      [Opt.clientNdi, Buffer.from([1, 2, 1])],
      [Opt.clientArch, Buffer.from([0, arch])],
      [Opt.vendorClass, Buffer.from(`PXEClient:Arch:${String(arch).padStart(5, "0")}:UNDI:002001`)],
      ...extra,
    ]),
  });
  const frame = (p: DhcpPacket, src: string, dst: string, dstPort: number) =>
    buildIpv4Udp({
      srcAddress: src,
      dstAddress: dst,
      srcPort: 68,
      dstPort,
      payload: encodeDhcp(p),
    });
  const ipxe: [number, Buffer][] = [
    [Opt.userClass, Buffer.from("iPXE")],
    [Opt.ipxeEncap, Buffer.from([19, 1, 1])],
  ];
  const bcast = "255.255.255.255";
  return [
    { port: 67, frame: frame(request(MessageType.discover, 0), "0.0.0.0", bcast, 67) },
    { port: 67, frame: frame(request(MessageType.discover, 7), "0.0.0.0", bcast, 67) },
    { port: 67, frame: frame(request(MessageType.discover, 0, ipxe), "0.0.0.0", bcast, 67) },
    {
      port: 4011,
      frame: frame(
        request(MessageType.request, 7, [], "192.0.2.10"),
        "192.0.2.10",
        serverAddress,
        4011,
      ),
    },
  ];
}

/**
 * Decodes, decides and encodes each sample request `rounds` times (or until `budgetMs`
 * passed), as the server does for a datagram off the wire: the reply is built, with its
 * IPv4/UDP header, and dropped. Returns how many replies were built (a test sees the path
 * ran to the end) and how long it took.
 */
export function warmUpProxyPath(opts: {
  bootFiles: BootFiles;
  serverAddress: string;
  isOwnMac?: (mac: string) => boolean;
  rounds?: number;
  budgetMs?: number;
}): { replies: number; ms: number } {
  const list = samples(opts.serverAddress);
  const policy: ClientPolicy = {
    noBootFile: false,
    scriptUrl: () => `http://${opts.serverAddress}/boot/script`,
  };
  const decideOpts = {
    bootFiles: opts.bootFiles,
    policy: () => policy,
    ...(opts.isOwnMac ? { isOwnMac: opts.isOwnMac } : {}),
  };
  let replies = 0;
  const rounds = opts.rounds ?? WARM_UP_ROUNDS;
  const began = performance.now();
  const until = began + (opts.budgetMs ?? WARM_UP_BUDGET_MS);
  // The clock is read every 50 rounds; the first round always runs.
  for (let r = 0; r < rounds && (r % 50 !== 0 || r === 0 || performance.now() < until); r++) {
    for (const s of list) {
      const parsed = parseIpv4Udp(s.frame);
      if (!parsed.ok) continue;
      const d = parsed.datagram;
      const decoded = decodeDhcp(Buffer.from(d.payload));
      if (!decoded.ok) continue;
      const decision = decide(
        decideOpts,
        {
          ifname: "warm-up",
          dstPort: s.port,
          srcAddress: d.srcAddress,
          srcPort: d.srcPort,
          localAddress: opts.serverAddress,
        },
        decoded.packet,
        opts.serverAddress,
      );
      if (decision.action !== "reply") continue;
      const { outcome } = decision;
      const frame = buildIpv4Udp({
        srcAddress: opts.serverAddress,
        dstAddress: outcome.destination.address,
        srcPort: s.port,
        dstPort: outcome.destination.port,
        payload: encodeDhcp(outcome.reply),
      });
      if (frame.length > 0) replies++;
    }
  }
  return { replies, ms: Math.round(performance.now() - began) };
}
