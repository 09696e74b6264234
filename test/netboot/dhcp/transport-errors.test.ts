// How the transport fails: bad configuration, a missing interface, no CAP_NET_RAW, a
// throwing handler, sends it cannot make. Traffic stays on loopback.
import dgram from "node:dgram";
import { pino } from "pino";
import t from "tap";
import { type InboundDatagram, openDhcpTransport } from "../../../src/netboot/dhcp/transport.js";
import { ip, sleep, startServer } from "../../fixtures/dhcp-transport/harness.js";

const isRoot = process.getuid?.() === 0;
const log = pino({ level: "silent" });
const noop = () => {};

t.test("configuration errors name the problem", async (t) => {
  await t.rejects(
    openDhcpTransport({ interfaces: [], log, onDatagram: noop }),
    /no interface configured/,
  );
  await t.rejects(
    openDhcpTransport({
      interfaces: [
        { name: "eth0", address: "10.0.0.1" },
        { name: "eth0", address: "10.0.0.2" },
      ],
      log,
      onDatagram: noop,
    }),
    /"eth0" is configured twice/,
  );
  await t.rejects(
    openDhcpTransport({ interfaces: [{ name: "eth1", address: "10.0.0" }], log, onDatagram: noop }),
    /"eth1" needs its own IPv4 address/,
  );
  await t.rejects(
    openDhcpTransport({
      interfaces: [{ name: "eth1", address: "10.0.0.1" }],
      ports: [70000],
      log,
      onDatagram: noop,
    }),
    /port out of range: 70000/,
  );
});

t.test(
  "a missing interface is named, with the fix",
  { skip: isRoot ? false : "needs root: without CAP_NET_RAW the raw socket fails first" },
  async (t) => {
    const name = `bfdtno${process.pid}`.slice(0, 15);
    await t.rejects(
      openDhcpTransport({
        interfaces: [{ name, address: "10.0.0.1" }],
        reservePorts: [],
        log,
        onDatagram: noop,
      }),
      new RegExp(`interface "${name}" does not exist.*ip -br link`),
    );
  },
);

t.test("without CAP_NET_RAW the error names the interface and the capability", async (t) => {
  const expected = /raw socket for interface "lo".*CAP_NET_RAW/;
  if (!isRoot) {
    await t.rejects(
      openDhcpTransport({
        interfaces: [{ name: "lo", address: "127.0.0.1" }],
        log,
        onDatagram: noop,
      }),
      expected,
    );
    return;
  }
  // As root, drop the capability from the bounding set so the fixture, though uid 0,
  // runs without it; in a namespace of its own in case it were to get further.
  const ns = `bfdt${process.pid}cap`;
  ip("netns", "add", ns);
  t.teardown(() => {
    try {
      ip("netns", "del", ns);
    } catch {}
  });
  ip("-n", ns, "link", "set", "lo", "up");
  const server = startServer(ns, { interfaces: [{ name: "lo", address: "127.0.0.1" }] }, [
    "setpriv",
    "--bounding-set=-net_raw",
    "--inh-caps=-net_raw",
  ]);
  t.teardown(() => server.stop());
  const e = await server.waitFor((e) => e.ev === "error" || e.ev === "ready", 30_000, "start");
  t.equal(e.ev, "error", "the transport refused to start");
  t.match(e.message, expected);
  t.equal(await server.exitCode(), 3);
});

t.test(
  "on loopback: handler errors, payload copies, sends that cannot be made",
  { skip: isRoot ? false : "needs root: raw sockets" },
  async (t) => {
    // A port of our own on 127.0.0.1, held so nothing answers port-unreachable.
    const holder = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => holder.bind(0, "127.0.0.1", resolve));
    t.teardown(() => holder.close());
    const port = holder.address().port;

    const seen: InboundDatagram[] = [];
    const transport = await openDhcpTransport({
      interfaces: [{ name: "lo", address: "127.0.0.1" }],
      ports: [port],
      reservePorts: [],
      log,
      onDatagram: (d) => {
        seen.push(d);
        if (seen.length === 1) throw new Error("a handler bug");
      },
    });
    t.teardown(() => transport.close());

    // From 127.0.0.2: datagrams from the transport's own address are taken for its own echoes.
    const sender = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => sender.bind(0, "127.0.0.2", resolve));
    t.teardown(() => sender.close());
    const tag = `bfdt-${process.pid}`;
    const send = (text: string) =>
      new Promise<void>((resolve, reject) =>
        sender.send(`${tag}-${text}`, port, "127.0.0.1", (err) => (err ? reject(err) : resolve())),
      );
    await send("one");
    await send("two");
    const deadline = Date.now() + 5000;
    while (seen.length < 2 && Date.now() < deadline) await sleep(20);
    t.same(
      seen.map((d) => d.payload.toString()),
      [`${tag}-one`, `${tag}-two`],
      "the second arrived although the handler threw on the first, and the first payload was not overwritten by it",
    );
    t.equal(seen[0]?.srcAddress, "127.0.0.2");
    t.equal(seen[0]?.ifname, "lo");

    t.equal(
      await transport.send({
        ifname: "eth9",
        srcPort: 67,
        dstAddress: "127.0.0.1",
        dstPort: port,
        payload: Buffer.from("x"),
      }),
      false,
      "an unconfigured interface is refused",
    );
    t.equal(
      await transport.send({
        ifname: "lo",
        srcPort: 67,
        dstAddress: "not-an-ip",
        dstPort: port,
        payload: Buffer.from("x"),
      }),
      false,
      "a bad address is refused",
    );
    t.equal(transport.stats().sendErrors, 2, "both counted");

    const received = new Promise<string>((resolve) =>
      holder.on("message", (m) => {
        if (m.toString() === `${tag}-back`) resolve(m.toString());
      }),
    );
    t.equal(
      await transport.send({
        ifname: "lo",
        srcPort: 4011,
        dstAddress: "127.0.0.1",
        dstPort: port,
        payload: Buffer.from(`${tag}-back`),
      }),
      true,
    );
    t.equal(
      await received,
      `${tag}-back`,
      "a unicast send on loopback reaches a kernel UDP socket",
    );

    await transport.close();
    t.equal(
      await transport.send({
        ifname: "lo",
        srcPort: 67,
        dstAddress: "127.0.0.1",
        dstPort: port,
        payload: Buffer.from("x"),
      }),
      false,
      "nothing is sent after close",
    );
  },
);
