// A hand-made PXE request, sent from inside a test host's network namespace, as an attacker
// (or a relay, or a legitimate client without firmware) would send it:
//   node --import tsx test/attack/forge-dhcp.ts '<json Forge>'
// Prints the reply's boot file as JSON ({"file": ...}), or {"file": null} when none came.
import dgram from "node:dgram";
import { decodeDhcp } from "../../src/netboot/dhcp/packet.js";
import { ascii, opt, rawPacket } from "../netboot/dhcp/rfc-builder.js";

export interface Forge {
  /** The bootfleet server's address. */
  server: string;
  /** 4011: a REQUEST as iPXE sends it after its offer; 67: a DISCOVER (relayed when giaddr is set). */
  port: 4011 | 67;
  /** The MAC the packet claims (chaddr). */
  mac: string;
  ciaddr?: string;
  giaddr?: string;
  /** Local address and UDP port to send from and wait on (a relay uses 67). */
  bind: { address: string; port: number };
  timeoutMs?: number;
}

const ip = (s: string) => s.split(".").map(Number);

function packet(f: Forge): Buffer {
  const options = [
    ...opt(53, [f.port === 4011 ? 3 : 1]),
    ...opt(60, ascii("PXEClient:Arch:00000:UNDI:002001")),
    ...opt(93, [0, 0]),
    // iPXE's own encapsulated options: the answer is the script URL itself.
    ...opt(175, opt(19, [1])),
    ...opt(77, ascii("iPXE")),
    255,
  ];
  return rawPacket({
    chaddr: f.mac.split(":").map((h) => Number.parseInt(h, 16)),
    xid: Math.floor(Math.random() * 0xffffffff),
    ciaddr: ip(f.ciaddr ?? "0.0.0.0"),
    giaddr: ip(f.giaddr ?? "0.0.0.0"),
    hops: f.giaddr ? 1 : 0,
    options,
  });
}

async function main(): Promise<void> {
  const f = JSON.parse(process.argv[2] ?? "{}") as Forge;
  const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
  await new Promise<void>((resolve) => socket.bind(f.bind.port, f.bind.address, resolve));
  const reply = new Promise<string | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), f.timeoutMs ?? 5000);
    socket.on("message", (msg) => {
      const d = decodeDhcp(msg);
      if (!d.ok || d.packet.op !== 2) return;
      clearTimeout(timer);
      const file = d.packet.file || d.packet.options.get(67)?.toString("utf8") || "";
      resolve(file);
    });
  });
  socket.send(packet(f), f.port, f.server);
  const file = await reply;
  socket.close();
  process.stdout.write(`${JSON.stringify({ file })}\n`);
}

await main();
