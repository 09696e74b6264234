// Hostile TFTP traffic, as real UDP packets to a real server: one host trying to hold every
// transfer slot, a forged source trying to turn the server into an amplifier, a client that
// trickles ACKs to keep its slot, and requests to an address TFTP should not listen on.
//
// Before these fixes: 200 requests asking timeout=255 from one host took all 64 slots for
// timeout × (retries + 1) = 255 × 6 s ≈ 25 minutes; a silent peer got 6 copies of the first
// window per request; no transfer had a lifetime; the server listened on 0.0.0.0.

import { createSocket, type Socket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import t from "tap";
import { MAX_TIMEOUT_SECONDS, negotiateOptions } from "../../src/netboot/tftp/options.js";
import { BootTimeline } from "../../src/netboot/timeline.js";
import { Store } from "../../src/store/index.js";
import {
  ack,
  blockOf,
  type HasTeardown,
  opcodeOf,
  RawClient,
  request,
  sleep,
  startServer,
  waitFor,
} from "../netboot/tftp/fixtures/helpers.js";

const DATA = 3;
const ERROR = 5;
const OACK = 6;

/** A UDP socket on 127.0.0.1 that never answers, counting what it is sent. */
async function silentPeer(t: HasTeardown): Promise<{ socket: Socket; packets: Buffer[] }> {
  const socket = createSocket("udp4");
  const packets: Buffer[] = [];
  socket.on("message", (m) => packets.push(m));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  t.teardown(() => socket.close());
  return { socket, packets };
}

function send(socket: Socket, buf: Buffer, port: number, host = "127.0.0.1"): Promise<void> {
  return new Promise((resolve, reject) =>
    socket.send(buf, port, host, (err) => (err ? reject(err) : resolve())),
  );
}

t.test("timeout above the cap is refused (left out of the OACK), never lowered", async (t) => {
  const limits = { maxBlksize: 1468, maxWindowsize: 32 };
  const high = negotiateOptions(
    new Map([
      ["timeout", "255"],
      ["blksize", "1024"],
    ]),
    10,
    limits,
  );
  t.same(high.oack, [["blksize", "1024"]], "RFC 2349: the OACK may not carry another value");
  t.equal(high.timeoutMs, undefined, "the server's own timeout applies");
  const ok = negotiateOptions(new Map([["timeout", String(MAX_TIMEOUT_SECONDS)]]), 10, limits);
  t.same(ok.oack, [["timeout", String(MAX_TIMEOUT_SECONDS)]]);
});

t.test("200 requests with timeout=255 from one host: at most 4 slots, soon free", async (t) => {
  const f = await startServer(t, { timeoutMs: 1000 });
  await writeFile(join(f.root, "undionly.kpxe"), Buffer.alloc(70_000, 1));
  const peers = await Promise.all(Array.from({ length: 200 }, () => silentPeer(t)));
  const started = Date.now();
  for (const p of peers) {
    await send(p.socket, request("undionly.kpxe", "octet", [["timeout", "255"]]), f.port);
  }
  // Every request gets its first answer (DATA 1 or an ERROR) at once.
  t.ok(await waitFor(() => peers.every((p) => p.packets.length > 0), 10_000), "all answered");
  const admitted = peers.filter((p) => opcodeOf(p.packets[0]!) !== ERROR).length;
  const refused = peers.filter((p) => opcodeOf(p.packets[0]!) === ERROR);
  t.comment(`admitted ${admitted}, refused ${refused.length}`);
  t.ok(admitted <= 4, `at most 4 transfers for one host (got ${admitted})`);
  t.equal(admitted + refused.length, 200);
  t.match(
    refused[0]!.packets[0]!.subarray(4).toString("latin1"),
    /Too many transfers from 127\.0\.0\.1/,
  );
  t.ok(f.server.stats().activeTransfers <= 4, "the server counts no more than 4");
  // A silent client is dropped after (2 first-packet retransmissions + 1) × 1 s; the bound
  // below is a wait limit, far under the 25 minutes a slot was held before.
  const freed = await waitFor(() => f.server.stats().activeTransfers === 0, 30_000);
  const heldMs = Date.now() - started;
  t.ok(freed, "every slot is free again");
  t.comment(`slots held ${(heldMs / 1000).toFixed(1)} s (before the fix: 255 s × 6 = 1530 s)`);
  // Another host is served meanwhile and afterwards.
  const c = await RawClient.open();
  t.teardown(() => c.close());
  await c.send(request("undionly.kpxe"), f.port);
  const first = await c.next(3000);
  t.equal(first && opcodeOf(first.buf), DATA, "a new request is served");
});

t.test("a forged source (silent peer) gets a few packets, not a stream", async (t) => {
  const f = await startServer(t, { timeoutMs: 300, retries: 5 });
  await writeFile(join(f.root, "undionly.kpxe"), Buffer.alloc(200_000, 2));
  // The "victim": ports that never answer. The attacker's requests carry them as source;
  // here the victim's sockets send the requests themselves, which is what the server sees.
  const victims = await Promise.all(Array.from({ length: 40 }, () => silentPeer(t)));
  let requestBytes = 0;
  for (const [i, v] of victims.entries()) {
    // Half ask for big windows: before the first ACK only the OACK may go out.
    const opts: Array<[string, string]> =
      i % 2
        ? [
            ["blksize", "1468"],
            ["windowsize", "32"],
          ]
        : [];
    const rrq = request("undionly.kpxe", "octet", opts);
    requestBytes += rrq.length;
    await send(v.socket, rrq, f.port);
  }
  t.ok(await waitFor(() => victims.every((v) => v.packets.length > 0), 10_000), "all answered");
  t.ok(await waitFor(() => f.server.stats().activeTransfers === 0, 30_000), "all given up");
  await sleep(100);
  const received = victims.reduce((n, v) => n + v.packets.reduce((m, p) => m + p.length, 0), 0);
  const most = Math.max(...victims.map((v) => v.packets.length));
  const ratio = received / requestBytes;
  t.comment(
    `victim received ${received} bytes for ${requestBytes} bytes of requests: ×${ratio.toFixed(1)}; at most ${most} packets per port`,
  );
  t.ok(most <= 4, "a silent peer gets the first packet 3 times and an error, at most");
  t.ok(
    victims.every((v) => v.packets.every((p) => [DATA, OACK, ERROR].includes(opcodeOf(p)))),
    "nothing but the first packet and errors",
  );
  t.ok(
    victims.every((v) => v.packets.every((p) => opcodeOf(p) !== DATA || blockOf(p) === 1)),
    "never more than block 1 to a peer that has not answered",
  );
  t.ok(ratio < 16, `amplification below 16 (×${ratio.toFixed(1)})`);
});

t.test("a client trickling ACKs cannot keep a transfer past its lifetime", async (t) => {
  const f = await startServer(t, { timeoutMs: 1000, maxLifetimeMs: 1500 });
  await writeFile(join(f.root, "big.bin"), Buffer.alloc(512 * 200, 3));
  const c = await RawClient.open();
  t.teardown(() => c.close());
  await c.send(request("big.bin"), f.port);
  let last: Buffer | undefined;
  // ACK each block just inside the retransmission timeout, for as long as DATA comes.
  for (let i = 0; i < 200; i++) {
    const p = await c.next(3000);
    if (!p) break;
    last = p.buf;
    if (opcodeOf(p.buf) !== DATA) break;
    await sleep(600);
    await c.send(ack(blockOf(p.buf)), p.rinfo.port);
  }
  t.equal(last && opcodeOf(last), ERROR, "the server ended it with an ERROR");
  t.match(last?.subarray(4).toString("latin1"), /longer than 2 s/);
  const event = await f.nextEvent();
  t.equal(event.ok, false);
  t.match(event.error, /lifetime/);
  t.equal(f.server.stats().activeTransfers, 0);
});

t.test("TFTP listens on the netboot addresses only", async (t) => {
  const f = await startServer(t, { addresses: ["127.0.0.2"] });
  await writeFile(join(f.root, "f"), Buffer.alloc(100, 4));
  const c = await RawClient.open();
  t.teardown(() => c.close());
  await c.send(request("f"), f.port); // to 127.0.0.1: not one of the server's addresses
  t.equal(await c.next(1000), undefined, "no answer on another address");
  await send(c.socket, request("f"), f.port, "127.0.0.2");
  const p = await c.next(3000);
  t.equal(p && opcodeOf(p.buf), DATA, "answered on its own address");
  t.equal(p?.rinfo.address, "127.0.0.2", "the transfer comes from that address too");
});

t.test(
  "the per-transfer report reads the neighbour table only for served files, async",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), `bf-hostile-${process.pid}-`));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
    t.teardown(() => store.close());
    const lookups: string[] = [];
    const timeline = new BootTimeline({
      store,
      log: pino({ level: "silent" }),
      macForIp: async (ip) => {
        lookups.push(ip);
        return undefined;
      },
    });
    const refused = { file: "x", bytes: 0, durationMs: 0, clientPort: 1, ok: false };
    for (let i = 0; i < 200; i++)
      await timeline.transferred({ ...refused, clientAddress: "10.9.9.9" });
    t.same(
      lookups,
      [],
      "200 refused requests: no lookup at all (before: 200 reads of /proc/net/arp)",
    );
    await timeline.transferred({ ...refused, ok: true, bytes: 10, clientAddress: "10.1.1.1" });
    t.same(lookups, ["10.1.1.1"], "a served file is looked up");
  },
);
