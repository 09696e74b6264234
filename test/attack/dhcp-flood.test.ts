// Hostile DHCP traffic from another host on the LAN, real packets through network
// namespaces: an oversize datagram is dropped and counted by the transport, the reply queue
// stays bounded, and the daemon keeps answering a PXE DISCOVER while a host floods it with
// 63 KB option bombs.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { MAX_MESSAGE_LENGTH } from "../../src/netboot/dhcp/packet.js";
import {
  fixtureDir,
  type JsonProc,
  sleep,
  startClient,
  startServer,
} from "../fixtures/dhcp-transport/harness.js";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { TestLan } from "../helpers/lan.js";
import { optionBomb } from "./option-bomb.js";

const skip = process.getuid?.() === 0 ? false : "needs root: network namespaces and raw sockets";
const SERVER = { bridge: "br0", address: "10.97.0.1" };

function discoverFixture(): Buffer {
  const hex = readFileSync(join(fixtureDir, "../dhcp/ipxe-rom-e1000-discover.hex"), "utf8");
  return Buffer.from(hex.replace(/\s+/g, ""), "hex");
}

/** A client process in its own host namespace, stopped in teardown. */
type Teardown = { teardown(fn: () => void | Promise<void>): void };

async function client(t: Teardown, lan: TestLan, address: string): Promise<JsonProc> {
  const c = startClient(lan.addHost(SERVER.bridge, address));
  t.teardown(async () => {
    await c.stop();
  });
  await c.waitFor((e) => e.ev === "ready", 10_000, "client ready");
  return c;
}

t.test("the DHCP transport under hostile datagrams", { skip }, async (t) => {
  const lan = TestLan.create(t, "bfatkt", [SERVER]);
  const server = startServer(lan.ns, {
    interfaces: [{ name: SERVER.bridge, address: SERVER.address }],
    maxQueuedSends: 32,
    sendIntervalMs: 20,
    sendBurst: 1,
  });
  t.teardown(() => server.stop());
  const first = await server.waitFor((e) => e.ev === "ready" || e.ev === "error", 30_000, "ready");
  t.equal(first.ev, "ready", `transport opened ${first.message ?? ""}`);
  const host = await client(t, lan, "10.97.0.20");
  let seq = 0;
  const stats = async () => {
    const id = `stats-${++seq}`;
    server.send({ cmd: "stats", id });
    return (await server.waitFor((e) => e.ev === "stats" && e.id === id, 5000, "stats")).stats;
  };
  const udp = (payload: Buffer) => {
    const id = `udp-${++seq}`;
    host.send({ cmd: "udp", id, dst: SERVER.address, dstPort: 67, hex: payload.toString("hex") });
    return host.waitFor((e) => e.ev === "udp-sent" && e.id === id, 5000, "udp sent");
  };

  t.test("a datagram longer than a DHCP message is dropped and counted", async (t) => {
    const before = await stats();
    const oversize = [optionBomb(21_000), Buffer.alloc(MAX_MESSAGE_LENGTH + 1, 0x42)];
    for (const p of oversize) await udp(p);
    const control = Buffer.from(`control-${process.pid}`);
    await udp(control);
    await server.waitFor(
      (e) => e.ev === "datagram" && e.payload === control.toString("hex"),
      5000,
      "the control datagram",
    );
    const after = await stats();
    t.equal(
      (after.dropped.oversize ?? 0) - (before.dropped.oversize ?? 0),
      2,
      "two counted as oversize",
    );
    t.notOk(
      server.events.some((e) => e.ev === "datagram" && e.payload.length > 2 * MAX_MESSAGE_LENGTH),
      "neither handed on",
    );
  });

  t.test("replies beyond the queue bound are refused, not queued", async (t) => {
    const id = `send-${++seq}`;
    server.send({
      cmd: "send",
      id,
      count: 500,
      d: {
        ifname: SERVER.bridge,
        srcPort: 67,
        dstAddress: "10.97.0.20",
        dstPort: 68,
        payload: Buffer.from("offer").toString("hex"),
      },
    });
    const sent = await server.waitFor((e) => e.ev === "sent" && e.id === id, 60_000, "sent");
    // One leaves at once (the pacing budget's one token), one is in the pump's hand waiting
    // for the next token, 32 wait in the queue: everything else is refused.
    t.ok(sent.ok <= 34, `${sent.ok} of 500 sent with room for 32 waiting`);
    t.ok(sent.ok >= 1, "the first ones left");
    const s = await stats();
    t.equal(s.queueFull, 500 - sent.ok, "every refusal counted");
  });
});

t.test("the daemon answers a PXE DISCOVER while a LAN host floods it", { skip }, async (t) => {
  const lan = TestLan.create(t, "bfatkd", [SERVER]);
  const data = tempDir(t);
  const daemon = await startDaemon(t, {
    wrapper: lan.wrapper,
    env: {
      BOOTFLEET_DATA_DIR: data,
      BOOTFLEET_HTTP_LISTEN: `${SERVER.address}:8080`,
      BOOTFLEET_TFTP_PORT: "0",
      BOOTFLEET_DHCP_ENABLED: "true",
      BOOTFLEET_NETBOOT_INTERFACES: SERVER.bridge,
    },
    timeoutMs: 60_000,
  });
  const pc = await client(t, lan, "10.97.0.30");
  pc.send({ cmd: "listen", id: "l68", port: 68 });
  await pc.waitFor((e) => e.ev === "listening", 5000, "listening on 68");

  const flooderHost = lan.addHost(SERVER.bridge, "10.97.0.40");
  const flooder: ChildProcess = spawn(
    "ip",
    [
      "netns",
      "exec",
      flooderHost,
      "python3",
      join(import.meta.dirname, "flood.py"),
      SERVER.address,
    ],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  t.teardown(() => {
    if (flooder.exitCode === null && flooder.signalCode === null) flooder.kill("SIGKILL");
  });
  let floodSent = 0;
  flooder.stdout?.setEncoding("utf8").on("data", (s: string) => {
    for (const m of s.matchAll(/"sent": (\d+)/g)) floodSent = Number(m[1]);
  });
  // The flood runs a while before the PC asks, so the daemon is already under it.
  for (let i = 0; i < 40 && floodSent < 2000; i++) await sleep(250);
  t.ok(floodSent >= 2000, `flood under way (${floodSent} datagrams sent)`);

  const discover = discoverFixture();
  const xid = discover.readUInt32BE(4);
  let reply: Buffer | undefined;
  // As PXE firmware does: ask again after a wait, a few times (4 s, then 8 s in the spec).
  for (let attempt = 0; attempt < 5 && !reply; attempt++) {
    const id = `discover-${attempt}`;
    pc.send({
      cmd: "frame",
      id,
      ifname: "eth0",
      src: "0.0.0.0",
      dst: "255.255.255.255",
      srcPort: 68,
      dstPort: 67,
      hex: discover.toString("hex"),
    });
    await pc.waitFor((e) => e.ev === "framed" && e.id === id, 5000, "DISCOVER sent");
    const got = await pc
      .waitFor(
        (e) =>
          e.ev === "recv" &&
          typeof e.hex === "string" &&
          e.hex.startsWith("02") &&
          Buffer.from(e.hex, "hex").readUInt32BE(4) === xid,
        4000,
        "proxy OFFER",
      )
      .catch(() => undefined);
    if (got) reply = Buffer.from(got.hex, "hex");
  }
  t.ok(reply, "the PXE client got its proxy OFFER during the flood");
  t.equal(reply?.[0], 2, "a BOOTREPLY");
  t.ok(flooder.exitCode === null, "the flood was still running");
  t.equal(daemon.proc.exitCode, null, "the daemon is still running");
  flooder.kill("SIGKILL");
});
