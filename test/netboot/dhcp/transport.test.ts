// The transport inside a server namespace with three links to three client namespaces:
// lan0 (10.201.1.0/24) and lan1 (10.201.2.0/24) are configured, lan2 (10.201.3.0/24) is not.
import { readFileSync } from "node:fs";
import t from "tap";
import {
  type Event,
  ip,
  type JsonProc,
  sleep,
  startClient,
  startServer,
} from "../../fixtures/dhcp-transport/harness.js";

const notRoot = process.getuid?.() !== 0;

const hexOf = (s: string) => Buffer.from(s).toString("hex");

t.test(
  "proxy-DHCP transport on a multi-homed server",
  { skip: notRoot ? "needs root: network namespaces, veth, raw sockets" : false },
  async (t) => {
    const id = `bfdt${process.pid}`;
    const ns = { srv: `${id}s`, a: `${id}a`, b: `${id}b`, c: `${id}c` };
    const procs: JsonProc[] = [];
    t.teardown(async () => {
      for (const p of procs) await p.stop();
      for (const n of Object.values(ns)) {
        try {
          ip("netns", "del", n);
        } catch {}
      }
    });

    for (const n of Object.values(ns)) {
      ip("netns", "add", n);
      ip("-n", n, "link", "set", "lo", "up");
    }
    const links = [
      { lan: "lan0", client: ns.a, net: "10.201.1" },
      { lan: "lan1", client: ns.b, net: "10.201.2" },
      { lan: "lan2", client: ns.c, net: "10.201.3" },
    ];
    for (const l of links) {
      ip(
        "-n",
        ns.srv,
        "link",
        "add",
        l.lan,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        l.client,
      );
      ip("-n", ns.srv, "addr", "add", `${l.net}.1/24`, "dev", l.lan);
      ip("-n", l.client, "addr", "add", `${l.net}.2/24`, "dev", "eth0");
      ip("-n", ns.srv, "link", "set", l.lan, "up");
      ip("-n", l.client, "link", "set", "eth0", "up");
    }

    const ready = (p: JsonProc, ms = 20_000) => p.waitFor((e) => e.ev === "ready", ms, "ready");
    const start = <T extends JsonProc>(p: T) => {
      procs.push(p);
      return p;
    };

    // Stands in for the site's DHCP server on the same host, bound before bootfleet.
    const site = start(startClient(ns.srv, "site-dhcp"));
    await ready(site);
    site.send({ cmd: "listen", id: "l67", port: 67 });
    await site.waitFor((e) => e.ev === "listening", 5000, "site listening");

    const server = start(
      startServer(ns.srv, {
        interfaces: [
          { name: "lan0", address: "10.201.1.1" },
          { name: "lan1", address: "10.201.2.1" },
        ],
      }),
    );
    const first = await server.waitFor(
      (e) => e.ev === "ready" || e.ev === "error",
      30_000,
      "ready",
    );
    t.equal(first.ev, "ready", `transport opened ${first.message ?? ""}`);

    const clients = {
      a: start(startClient(ns.a)),
      b: start(startClient(ns.b)),
      c: start(startClient(ns.c)),
    };
    for (const c of Object.values(clients)) {
      await ready(c);
      c.send({ cmd: "listen", id: "l68", port: 68 });
      await c.waitFor((e) => e.ev === "listening", 5000, "listening on 68");
    }

    let seq = 0;
    const marker = (what: string) => `${what}-${process.pid}-${++seq}`;
    const fromServer = (payloadHex: string) => (e: Event) =>
      e.ev === "datagram" && e.payload === payloadHex;
    const discover = (client: JsonProc, text: string, corrupt?: string) => {
      const frameId = marker("frame");
      client.send({
        cmd: "frame",
        id: frameId,
        ifname: "eth0",
        src: "0.0.0.0",
        dst: "255.255.255.255",
        srcPort: 68,
        dstPort: 67,
        hex: hexOf(text),
        corrupt,
      });
      return client.waitFor((e) => e.ev === "framed" && e.id === frameId, 5000, "frame sent");
    };
    const serverSend = async (d: object, count?: number) => {
      const sendId = marker("send");
      server.send({ cmd: "send", id: sendId, d, count });
      return server.waitFor((e) => e.ev === "sent" && e.id === sendId, 30_000, "sent");
    };
    const stats = async () => {
      const statsId = marker("stats");
      server.send({ cmd: "stats", id: statsId });
      return (await server.waitFor((e) => e.ev === "stats" && e.id === statsId, 5000, "stats"))
        .stats;
    };

    t.test(
      "a broadcast from 0.0.0.0:68 is reported with the interface it came in on",
      async (t) => {
        for (const [client, ifname, address] of [
          [clients.a, "lan0", "10.201.1.1"],
          [clients.b, "lan1", "10.201.2.1"],
        ] as const) {
          const text = marker(`discover-${ifname}`);
          await discover(client, text);
          const d = await server.waitFor(fromServer(hexOf(text)), 5000, `datagram ${text}`);
          t.same(
            {
              ifname: d.ifname,
              localAddress: d.localAddress,
              srcAddress: d.srcAddress,
              srcPort: d.srcPort,
              dstAddress: d.dstAddress,
              dstPort: d.dstPort,
            },
            {
              ifname,
              localAddress: address,
              srcAddress: "0.0.0.0",
              srcPort: 68,
              dstAddress: "255.255.255.255",
              dstPort: 67,
            },
            `request on ${ifname}`,
          );
        }
      },
    );

    t.test("the raw sockets' receive buffer is 8 MiB, past rmem_max", async (t) => {
      // The kernel reports twice what was asked. rmem_max is the host's (stock Debian:
      // 212,992): SO_RCVBUF alone stops there.
      const rmemMax = Number(readFileSync("/proc/sys/net/core/rmem_max", "utf8"));
      const s = await stats();
      t.equal(
        s.receiveBufferBytes,
        16 * 1024 * 1024,
        `the kernel holds 16 MiB (rmem_max ${rmemMax})`,
      );
      t.ok(s.receiveBufferBytes > 2 * rmemMax, "past rmem_max");
    });

    t.test("a broadcast reply leaves by its interface only", async (t) => {
      for (const [ifname, address, to, notTo] of [
        ["lan0", "10.201.1.1", clients.a, [clients.b, clients.c]],
        ["lan1", "10.201.2.1", clients.b, [clients.a, clients.c]],
      ] as const) {
        const text = hexOf(marker(`offer-${ifname}`));
        const sent = await serverSend({
          ifname,
          srcPort: 67,
          dstAddress: "255.255.255.255",
          dstPort: 68,
          payload: text,
        });
        t.equal(sent.ok, 1, `send on ${ifname} reported sent`);
        const got = await to.waitFor((e) => e.ev === "recv" && e.hex === text, 5000, "offer");
        t.same({ from: got.from, fromPort: got.fromPort }, { from: address, fromPort: 67 });
        // Give a wrongly routed copy ample time to show up elsewhere.
        await sleep(300);
        for (const other of notTo) {
          t.notOk(
            other.events.some((e) => e.ev === "recv" && e.hex === text),
            `${ifname} reply not seen by ${other.name}`,
          );
        }
      }
    });

    t.test("an interface that is not configured is not served", async (t) => {
      const ignored = marker("discover-lan2");
      const control = marker("discover-lan0");
      await discover(clients.c, ignored);
      await discover(clients.a, control);
      await server.waitFor(fromServer(hexOf(control)), 5000, "the control request on lan0");
      await sleep(300);
      t.notOk(
        server.events.some(fromServer(hexOf(ignored))),
        "the request on lan2 did not reach onDatagram",
      );
    });

    t.test("a unicast request to 4011 is handled once and answered from 4011", async (t) => {
      const text = hexOf(marker("pxe-request"));
      const udpId = marker("udp");
      // Connected, so an ICMP port-unreachable from the server would surface as "refused".
      clients.a.send({
        cmd: "udp",
        id: udpId,
        dst: "10.201.1.1",
        dstPort: 4011,
        hex: text,
        connect: true,
      });
      const sent = await clients.a.waitFor(
        (e) => e.ev === "udp-sent" && e.id === udpId,
        5000,
        "udp sent",
      );
      const d = await server.waitFor(fromServer(text), 5000, "the 4011 request");
      t.same(
        [d.ifname, d.localAddress, d.srcAddress, d.srcPort, d.dstAddress, d.dstPort],
        ["lan0", "10.201.1.1", "10.201.1.2", sent.srcPort, "10.201.1.1", 4011],
      );
      const reply = hexOf(marker("pxe-ack"));
      await serverSend({
        ifname: "lan0",
        srcPort: 4011,
        dstAddress: d.srcAddress,
        dstPort: d.srcPort,
        payload: reply,
      });
      const got = await clients.a.waitFor(
        (e) => e.tag === udpId && e.ev === "recv",
        5000,
        "the reply",
      );
      t.same([got.from, got.fromPort, got.hex], ["10.201.1.1", 4011, reply]);
      await sleep(300);
      t.notOk(
        clients.a.events.some((e) => e.tag === udpId && e.ev === "refused"),
        "no ICMP port-unreachable reached the client",
      );
      t.equal(server.events.filter(fromServer(text)).length, 1, "delivered exactly once");
    });

    t.test("a DHCP server on the same host keeps its unicast on port 67", async (t) => {
      const text = hexOf(marker("renew"));
      const udpId = marker("udp");
      clients.a.send({ cmd: "udp", id: udpId, dst: "10.201.1.1", dstPort: 67, hex: text });
      const got = await site.waitFor((e) => e.ev === "recv" && e.hex === text, 5000, "the renewal");
      t.equal(got.from, "10.201.1.2", "the site's server got it");
      const d = await server.waitFor(fromServer(text), 5000, "bootfleet's copy");
      t.equal(d.ifname, "lan0", "bootfleet sees it too, through its raw socket");
    });

    t.test(
      "garbage UDP framing is dropped and counted; the next good datagram gets in",
      async (t) => {
        const before = await stats();
        const bad = [
          [marker("long"), "udp-length-long"],
          [marker("short"), "udp-length-short"],
          [marker("sum"), "udp-checksum"],
        ] as const;
        for (const [text, corrupt] of bad) await discover(clients.a, text, corrupt);
        const good = marker("good");
        await discover(clients.a, good);
        await server.waitFor(fromServer(hexOf(good)), 5000, "the good datagram");
        await sleep(200);
        for (const [text, corrupt] of bad) {
          t.notOk(server.events.some(fromServer(hexOf(text))), `${corrupt} not delivered`);
        }
        const after = await stats();
        const delta = (reason: string) =>
          (after.dropped[reason] ?? 0) - (before.dropped[reason] ?? 0);
        t.equal(delta("bad-udp-length"), 2, "two bad UDP lengths counted");
        t.equal(delta("bad-udp-checksum"), 1, "one bad UDP checksum counted");
        t.equal(after.delivered - before.delivered, 1, "only the good one delivered");
      },
    );

    t.test("a burst of 300 broadcast replies arrives whole", async (t) => {
      const n = 300;
      const prefix = hexOf(marker("burst"));
      const before = await stats();
      const sent = await serverSend(
        {
          ifname: "lan0",
          srcPort: 67,
          dstAddress: "255.255.255.255",
          dstPort: 68,
          payload: prefix,
        },
        n,
      );
      t.equal(sent.ok, n, "all handed to the kernel");
      const received = () =>
        new Set(
          clients.a.events
            .filter((e) => e.ev === "recv" && typeof e.hex === "string" && e.hex.startsWith(prefix))
            .map((e) => e.hex),
        ).size;
      const deadline = Date.now() + 10_000;
      while (received() < n && Date.now() < deadline) await sleep(50);
      t.equal(received(), n, "every reply reached the client");
      t.comment(`${n} replies queued at once left in ${Math.round(sent.ms)} ms`);
      t.notOk(
        clients.b.events.some((e) => e.ev === "recv" && e.hex.startsWith(prefix)),
        "none leaked to lan1",
      );
      // The kernel loops every broadcast back to the raw socket: read, and set aside by its
      // source address before any parsing, never handed on as a request.
      let after = await stats();
      while (after.ignored - before.ignored < n && Date.now() < deadline + 5000) {
        await sleep(50);
        after = await stats();
      }
      t.ok(after.ignored - before.ignored >= n, "the looped-back replies were ignored");
      t.equal(after.delivered, before.delivered, "none of them delivered");
    });

    t.test("close sends nothing more and exits cleanly", async (t) => {
      server.send({ cmd: "close", id: "close" });
      const closed = await server.waitFor((e) => e.ev === "closed", 5000, "closed");
      t.equal(closed.stats.sendErrors, 0, "no send failed during the run");
      t.equal(await server.exitCode(), 0);
    });
  },
);
