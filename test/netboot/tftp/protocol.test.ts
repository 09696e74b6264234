// Protocol behaviour seen from a raw client on loopback: option negotiation read from the OACK
// bytes, windows, loss and duplicate ACKs, aborts, stalls, block number rollover, refusals.

import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { readdir, readlink, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import {
  ack,
  blockOf,
  errorCodeOf,
  errorMessageOf,
  errorPacket,
  fetchFile,
  makeTempDir,
  oackOptions,
  opcodeOf,
  type Packet,
  RawClient,
  request,
  sleep,
  startServer,
} from "./fixtures/helpers.js";

const DATA = 3;
const ERROR = 5;
const OACK = 6;

async function client(t: { teardown(fn: () => unknown): void }): Promise<RawClient> {
  const c = await RawClient.open();
  t.teardown(() => c.close());
  return c;
}

async function must(c: RawClient, ms = 2000): Promise<Packet> {
  const p = await c.next(ms);
  if (p === undefined) throw new Error(`no packet within ${ms} ms`);
  return p;
}

/** Exactly `n` packets, each within a generous bound (CI machines are loaded). */
async function take(c: RawClient, n: number, ms = 3000): Promise<Packet[]> {
  const out: Packet[] = [];
  for (let i = 0; i < n; i++) out.push(await must(c, ms));
  return out;
}

const blocks = (ps: Packet[]) => ps.map((p) => blockOf(p.buf));

async function openFds(): Promise<string[]> {
  const out: string[] = [];
  for (const fd of await readdir("/proc/self/fd")) {
    try {
      out.push(await readlink(`/proc/self/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

t.test("OACK carries exactly the accepted options, capped, unknown ones left out", async (t) => {
  const f = await startServer(t, { maxBlksize: 1468, maxWindowsize: 16 });
  const content = randomBytes(100_000);
  await writeFile(join(f.root, "file.bin"), content);
  const c = await client(t);
  await c.send(
    request("file.bin", "octet", [
      ["blksize", "65464"],
      ["tsize", "0"],
      ["windowsize", "8"],
      ["timeout", "2"],
      ["x-vendor", "1"],
    ]),
    f.port,
  );
  const oack = await must(c);
  t.equal(opcodeOf(oack.buf), OACK);
  t.not(oack.rinfo.port, f.port, "answer comes from a new TID, not the listening port");
  t.same(
    oackOptions(oack.buf),
    new Map([
      ["blksize", "1468"],
      ["tsize", String(content.length)],
      ["windowsize", "8"],
      ["timeout", "2"],
    ]),
  );
  await c.send(ack(0), oack.rinfo.port);
  const window = await take(c, 8);
  t.same(await c.collect(300), [], "then the server waits for the ACK");
  t.same(
    window.map((p) => [opcodeOf(p.buf), blockOf(p.buf), p.buf.length - 4]),
    [1, 2, 3, 4, 5, 6, 7, 8].map((b) => [DATA, b, 1468]),
    "one window of 8 full blocks",
  );
  t.same(Buffer.concat(window.map((p) => p.buf.subarray(4))), content.subarray(0, 8 * 1468));
});

t.test("no options: no OACK, DATA 1 of 512 bytes at once (RFC 1350)", async (t) => {
  const f = await startServer(t);
  await writeFile(join(f.root, "f"), randomBytes(2000));
  const c = await client(t);
  await c.send(request("f", "octet", [["unknown", "1"]]), f.port);
  const p = await must(c);
  t.equal(opcodeOf(p.buf), DATA);
  t.equal(blockOf(p.buf), 1);
  t.equal(p.buf.length, 4 + 512);
});

t.test("tsize is not sent when not asked", async (t) => {
  const f = await startServer(t);
  await writeFile(join(f.root, "f"), "abc");
  const c = await client(t);
  await c.send(request("f", "octet", [["blksize", "1024"]]), f.port);
  const p = await must(c);
  t.same(oackOptions(p.buf), new Map([["blksize", "1024"]]));
});

t.test(
  "a lost ACK brings one resend, duplicate ACKs bring nothing (sorcerer's apprentice)",
  async (t) => {
    const f = await startServer(t, { timeoutMs: 1000 });
    await writeFile(join(f.root, "f"), randomBytes(512 * 4 + 10));
    const c = await client(t);
    await c.send(request("f"), f.port);
    const first = await must(c);
    t.equal(blockOf(first.buf), 1);
    const tid = first.rinfo.port;
    // Our ACK 1 is "lost": the server resends block 1 once per timeout, not in a loop.
    const resent = await c.collect(1500);
    t.same(
      resent.map((p) => blockOf(p.buf)),
      [1],
      "exactly one retransmission of block 1 after one timeout",
    );
    // The ACK arrives twice (the late original and the answer to the resend).
    await c.send(ack(1), tid);
    await c.send(ack(1), tid);
    t.same(blocks(await take(c, 1)), [2]);
    t.same(await c.collect(300), [], "block 2 sent once, not once per duplicate ACK");
    await c.send(ack(1), tid);
    t.same(await c.collect(300), [], "a stale duplicate ACK triggers no send");
    for (let b = 2; b <= 5; b++) {
      await c.send(ack(b), tid);
      if (b < 5) t.equal(blockOf((await must(c)).buf), b + 1);
    }
    const event = await f.nextEvent();
    t.equal(event.ok, true);
    t.equal(event.bytes, 512 * 4 + 10);
  },
);

t.test(
  "windowsize: duplicate ACKs of a window do not resend it; an ACK inside the window restarts after it",
  async (t) => {
    const f = await startServer(t, { timeoutMs: 1000 });
    const content = randomBytes(512 * 20);
    await writeFile(join(f.root, "f"), content);
    const c = await client(t);
    await c.send(request("f", "octet", [["windowsize", "4"]]), f.port);
    const oack = await must(c);
    t.same(oackOptions(oack.buf), new Map([["windowsize", "4"]]));
    const tid = oack.rinfo.port;
    await c.send(ack(0), tid);
    t.same(blocks(await take(c, 4)), [1, 2, 3, 4]);
    t.same(await c.collect(200), [], "one window, then the server waits");
    await c.send(ack(4), tid);
    await c.send(ack(4), tid);
    await c.send(ack(4), tid);
    t.same(blocks(await take(c, 4)), [5, 6, 7, 8]);
    t.same(await c.collect(300), [], "three ACKs of block 4 bring one window, not three");
    // The client saw 5 and 6 but lost 7: it acknowledges 6 (RFC 7440 section 4).
    await c.send(ack(6), tid);
    t.same(blocks(await take(c, 4)), [7, 8, 9, 10]);
    // A timeout resends the whole current window once.
    const before = Date.now();
    t.same(blocks(await take(c, 4)), [7, 8, 9, 10]);
    t.ok(Date.now() - before >= 800, "the resend waited for the timeout");
  },
);

t.test("a stalled transfer is dropped after the retries and its file handle closed", async (t) => {
  // maxCachedFileBytes 0 serves the file from an open handle, which must be closed afterwards.
  const f = await startServer(t, { timeoutMs: 150, retries: 2, maxCachedFileBytes: 0 });
  const path = join(f.root, "big.bin");
  await writeFile(path, randomBytes(50_000));
  const c = await client(t);
  await c.send(request("big.bin"), f.port);
  const first = await must(c);
  t.equal(blockOf(first.buf), 1);
  t.ok((await openFds()).includes(path), "the file is open during the transfer");
  t.equal(f.server.stats().openHandles, 1);
  const rest = await take(c, 3);
  t.same(
    rest.map((p) => opcodeOf(p.buf)),
    [DATA, DATA, ERROR],
    "two retransmissions, then an error packet",
  );
  const event = await f.nextEvent();
  t.equal(event.ok, false);
  t.match(event.error, /timed out/);
  t.equal(f.server.stats().activeTransfers, 0);
  t.equal(f.server.stats().openHandles, 0);
  await sleep(50);
  t.notOk((await openFds()).includes(path), "no descriptor left on the file");
});

t.test(
  "tsize probe then error 8 (UEFI) is logged at debug level, reported as a size probe",
  async (t) => {
    const f = await startServer(t);
    await writeFile(join(f.root, "snponly.efi"), randomBytes(3000));
    const c = await client(t);
    await c.send(
      request("snponly.efi", "octet", [
        ["tsize", "0"],
        ["blksize", "1468"],
      ]),
      f.port,
    );
    const oack = await must(c);
    t.equal(oackOptions(oack.buf).get("tsize"), "3000");
    await c.send(errorPacket(8, "User aborted the transfer"), oack.rinfo.port);
    const event = await f.nextEvent();
    t.equal(event.ok, false);
    t.equal(event.errorCode, 8);
    t.equal(event.sizeProbe, true);
    const lines = f.logs.filter((l) => l.file === "snponly.efi");
    t.ok(lines.length > 0, "it is logged");
    t.ok(
      lines.every((l) => l.level <= 20),
      "at debug level or below, never as a warning",
    );
    // The real request that follows is served.
    const got = await fetchFile(f.port, "snponly.efi", { options: [["blksize", "1468"]] });
    t.equal(got.data.length, 3000);
  },
);

t.test("a client error in the middle of a transfer ends it and is reported", async (t) => {
  const f = await startServer(t);
  await writeFile(join(f.root, "f"), randomBytes(5000));
  const c = await client(t);
  await c.send(request("f"), f.port);
  const p = await must(c);
  await c.send(ack(1), p.rinfo.port);
  await must(c);
  await c.send(errorPacket(0, "disk full on my side"), p.rinfo.port);
  const event = await f.nextEvent();
  t.equal(event.ok, false);
  t.equal(event.bytes, 512);
  t.notOk(event.sizeProbe);
  t.same(await c.collect(300), [], "nothing more is sent");
});

t.test("block numbers roll over past 65535 to 0", async (t) => {
  const f = await startServer(t, { maxWindowsize: 64 });
  // blksize 8 makes 65536 blocks out of half a megabyte.
  const content = randomBytes(8 * 65536 + 100);
  await writeFile(join(f.root, "big"), content);
  const got = await fetchFile(f.port, "big", {
    options: [
      ["blksize", "8"],
      ["windowsize", "64"],
    ],
  });
  t.equal(got.data.length, content.length);
  t.ok(got.data.equals(content), "byte-exact");
  const wrap = got.blocks.indexOf(65535);
  t.ok(wrap > 0, "block 65535 was sent");
  t.equal(got.blocks[wrap + 1], 0, "the block after 65535 is 0");
  t.equal(got.blocks.length, Math.floor(content.length / 8) + 1, "no block resent on loopback");
});

t.test("a file that is a multiple of blksize ends with an empty block", async (t) => {
  const f = await startServer(t);
  await writeFile(join(f.root, "f"), randomBytes(1024));
  const got = await fetchFile(f.port, "f");
  t.equal(got.data.length, 1024);
  t.same(got.blocks, [1, 2, 3]);
});

t.test("netascii converts line ends and tsize counts the converted bytes", async (t) => {
  const f = await startServer(t);
  await writeFile(join(f.root, "menu.txt"), "a\nb\rc");
  const got = await fetchFile(f.port, "menu.txt", { mode: "netascii", options: [["tsize", "0"]] });
  t.same(got.data, Buffer.from("a\r\nb\r\0c", "latin1"));
  t.equal(got.oack?.get("tsize"), "7");
});

t.test("write requests and mail mode are refused", async (t) => {
  const f = await startServer(t);
  const c = await client(t);
  await c.send(request("upload.bin", "octet", [], 2), f.port);
  const p = await must(c);
  t.equal(opcodeOf(p.buf), ERROR);
  t.equal(errorCodeOf(p.buf), 2, "access violation");
  t.match(errorMessageOf(p.buf), /read-only/i);
  await c.send(request("f", "mail"), f.port);
  t.equal(errorCodeOf((await must(c)).buf), 4);
});

t.test("path escapes and bad names are refused with the right code", async (t) => {
  const base = await makeTempDir(t, "escape");
  await writeFile(join(base, "secret"), "s");
  const f = await startServer(t);
  await symlink(join(base, "secret"), join(f.root, "out"));
  await writeFile(join(f.root, "ok.bin"), "fine");
  const cases: Array<[string, Buffer, number]> = [
    ["parent segments", request("../../../../etc/passwd"), 2],
    ["parent segments with backslashes", request("..\\..\\etc\\passwd"), 2],
    ["absolute path is looked up under the root", request("/etc/passwd"), 1],
    ["symlink leading out", request("out"), 2],
    ["overlong name", request("a".repeat(300)), 2],
    ["control character", request("ok\x01.bin"), 2],
    // The name ends at the first NUL; what follows is read as the mode, which is then invalid.
    ["NUL inside the name", request(Buffer.from("ok.bin\0../../etc/passwd")), 4],
    ["missing file", request("nope.bin"), 1],
    ["a directory", request("/"), 1],
  ];
  const c = await client(t);
  for (const [name, buf, code] of cases) {
    await c.send(buf, f.port);
    const p = await must(c);
    t.equal(opcodeOf(p.buf), ERROR, `${name}: error packet`);
    t.equal(errorCodeOf(p.buf), code, `${name}: code ${code}`);
  }
  t.ok(
    f.logs.some((l) => l.msg === "tftp request refused" && l.level === 40 && l.file === "out"),
    "a symlink escape is logged as a warning",
  );
  // Leading slash and backslashes as firmware sends them are served.
  await writeFile(join(f.root, "ok2.bin"), "fine2");
  t.equal((await fetchFile(f.port, "/ok.bin")).data.toString(), "fine");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(join(f.root, "boot"));
  await writeFile(join(f.root, "boot", "x.com"), "wds");
  t.equal((await fetchFile(f.port, "\\boot\\x.com")).data.toString(), "wds");
});

t.test("refusal log lines are rate-limited and count what they dropped", async (t) => {
  let clock = 1_000_000;
  const f = await startServer(t, { now: () => clock });
  const c = await client(t);
  for (let i = 0; i < 100; i++) await c.send(request(`../flood${i}`), f.port);
  const replies = await c.collect(1000);
  t.equal(replies.length, 100, "every request still gets its error packet");
  const refused = () => f.logs.filter((l) => l.msg === "tftp request refused");
  t.equal(refused().length, 20, "only the first 20 lines in the window are logged");
  clock += 10_000;
  await c.send(request("../after"), f.port);
  await must(c);
  const last = refused().at(-1);
  t.equal(last?.file, "../after");
  t.equal(last?.suppressedLines, 80, "the next line says how many were dropped");
});

t.test("a packet from a foreign TID is dropped and does not disturb the transfer", async (t) => {
  // The transfer socket is connected to its client: the kernel drops other sources' datagrams
  // and answers them with ICMP port unreachable, not a TFTP error 5 (RFC 1350's "should").
  const f = await startServer(t);
  const content = randomBytes(1500);
  await writeFile(join(f.root, "f"), content);
  const c = await client(t);
  const intruder = await client(t);
  await c.send(request("f"), f.port);
  const p1 = await must(c);
  await intruder.send(ack(1), p1.rinfo.port);
  t.same(await intruder.collect(300), [], "no TFTP packet for the intruder");
  t.same(await c.collect(100), [], "the intruder's ACK did not advance the transfer");
  // A connected sender learns of the kernel's port unreachable as ECONNREFUSED.
  const probe = createSocket("udp4");
  t.teardown(() => probe.close());
  await new Promise<void>((resolve) => probe.connect(p1.rinfo.port, "127.0.0.1", resolve));
  // The error comes back on a later send or on the receive side, whichever asks first.
  const refused = new Promise<string>((resolve) => {
    let settled = false;
    const settle = (why: string) => {
      settled = true;
      resolve(why);
    };
    probe.once("error", (e) => settle(String(e)));
    let tries = 0;
    const poke = () => {
      if (settled) return;
      probe.send(ack(1), (err) => {
        if (err) settle(String(err));
        else if (++tries < 20) setTimeout(poke, 50);
        else settle("no error after 20 datagrams");
      });
    };
    poke();
  });
  t.match(await refused, /ECONNREFUSED/, "the kernel refused the foreign source");
  const chunks = [p1.buf.subarray(4)];
  for (let b = 1; ; b++) {
    await c.send(ack(b), p1.rinfo.port);
    const p = await must(c);
    chunks.push(p.buf.subarray(4));
    if (p.buf.length - 4 < 512) {
      await c.send(ack(b + 1), p1.rinfo.port);
      break;
    }
  }
  t.ok(Buffer.concat(chunks).equals(content));
  t.equal((await f.nextEvent()).ok, true);
});

t.test("a repeated request from the same client port starts one transfer only", async (t) => {
  const f = await startServer(t, { timeoutMs: 1000 });
  await writeFile(join(f.root, "f"), randomBytes(2000));
  const c = await client(t);
  await c.send(request("f"), f.port);
  await c.send(request("f"), f.port);
  t.same(blocks(await take(c, 1)), [1]);
  t.same(await c.collect(300), [], "one DATA 1, from one transfer");
  t.equal(f.server.stats().activeTransfers, 1);
});

/** Reads a plain (512-byte, windowsize 1) transfer to its end from its first DATA packet. */
async function readToEnd(c: RawClient, first: Packet): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (let p = first; ; p = await must(c)) {
    if (opcodeOf(p.buf) !== DATA) throw new Error(`expected DATA, got opcode ${opcodeOf(p.buf)}`);
    chunks.push(p.buf.subarray(4));
    await c.send(ack(blockOf(p.buf)), first.rinfo.port);
    if (p.buf.length - 4 < 512) return Buffer.concat(chunks);
  }
}

t.test("at maxTransfers a request is left unanswered, and served when resent later", async (t) => {
  // A PXE ROM gives up its boot on an ERROR; left unanswered, it resends the RRQ after a timeout.
  let onBusy = 0;
  const f = await startServer(t, {
    maxTransfers: 2,
    maxTransfersPerAddress: 64,
    timeoutMs: 2000,
    onBusy: () => onBusy++,
  });
  const content = randomBytes(2000);
  await writeFile(join(f.root, "f"), content);
  const a = await client(t);
  const b = await client(t);
  const c = await client(t);
  await a.send(request("f"), f.port);
  await b.send(request("f"), f.port);
  const a1 = await must(a);
  await must(b);
  await c.send(request("f"), f.port);
  t.same(await c.collect(500), [], "no packet at all comes back while every slot is taken");
  t.equal(f.server.stats().unansweredBusy, 1, "counted");
  t.equal(onBusy, 1, "and told (the daemon's /metrics counter)");
  const busy = f.logs.filter((l) => l.msg.startsWith("tftp server busy"));
  t.equal(busy.length, 1, "one warn line");
  t.equal(busy[0]?.level, 40);
  t.match(busy[0], { client: "127.0.0.1", port: c.port, file: "f", maxTransfers: 2 });
  t.same(f.events, [], "no transfer event: nothing was answered");

  t.ok((await readToEnd(a, a1)).equals(content), "a finishes");
  t.equal((await f.nextEvent()).ok, true);
  // The resend comes from the same port, as a ROM's does.
  await c.send(request("f"), f.port);
  const c1 = await must(c);
  t.ok((await readToEnd(c, c1)).equals(content), "the resent request is served to the end");
  const event = await f.nextEvent();
  t.match(event, { ok: true, clientPort: c.port, bytes: content.length });
});

t.test("busy warnings are rate-limited; each unanswered request is still counted", async (t) => {
  const f = await startServer(t, { maxTransfers: 1, maxTransfersPerAddress: 64, timeoutMs: 3000 });
  await writeFile(join(f.root, "f"), randomBytes(2000));
  const holder = await client(t);
  await holder.send(request("f"), f.port);
  await must(holder);
  const others = await Promise.all(Array.from({ length: 30 }, () => client(t)));
  for (const o of others) await o.send(request("f"), f.port);
  const answers = await Promise.all(others.map((o) => o.collect(300)));
  t.equal(answers.flat().length, 0, "none of the 30 is answered");
  t.equal(f.server.stats().unansweredBusy, 30);
  const busy = f.logs.filter((l) => l.msg.startsWith("tftp server busy"));
  t.ok(busy.length >= 1 && busy.length < 30, `a few lines, not one per request (${busy.length})`);
});

t.test("the per-address cap still answers with an error when the server is full too", async (t) => {
  // One host over its share is broken or hostile: it is told so, not left to resend.
  const f = await startServer(t, { maxTransfers: 2, maxTransfersPerAddress: 2, timeoutMs: 2000 });
  await writeFile(join(f.root, "f"), randomBytes(2000));
  const a = await client(t);
  const b = await client(t);
  const c = await client(t);
  await a.send(request("f"), f.port);
  await b.send(request("f"), f.port);
  await must(a);
  await must(b);
  await c.send(request("f"), f.port);
  const p = await must(c);
  t.equal(opcodeOf(p.buf), ERROR);
  t.match(errorMessageOf(p.buf), /Too many transfers from 127\.0\.0\.1/);
  t.equal(f.server.stats().unansweredBusy, 0);
});

t.test("close() lets a transfer in flight finish and refuses new ones", async (t) => {
  const f = await startServer(t, { closeTimeoutMs: 3000 });
  const content = randomBytes(3000);
  await writeFile(join(f.root, "f"), content);
  const c = await client(t);
  await c.send(request("f"), f.port);
  const p1 = await must(c);
  const closed = f.server.close();
  const late = await client(t);
  await late.send(request("f"), f.port);
  const chunks = [p1.buf.subarray(4)];
  for (let b = 1; ; b++) {
    await c.send(ack(b), p1.rinfo.port);
    const p = await must(c);
    chunks.push(p.buf.subarray(4));
    if (p.buf.length - 4 < 512) {
      await c.send(ack(b + 1), p1.rinfo.port);
      break;
    }
  }
  await closed;
  t.ok(Buffer.concat(chunks).equals(content), "the transfer in flight completed");
  t.equal((await f.nextEvent()).ok, true);
  t.same(await late.collect(200), [], "the request sent after close() got no answer");
});

t.test("close() aborts a transfer that does not finish within the bound", async (t) => {
  const f = await startServer(t, { closeTimeoutMs: 300, timeoutMs: 5000 });
  await writeFile(join(f.root, "f"), randomBytes(3000));
  const c = await client(t);
  await c.send(request("f"), f.port);
  await must(c);
  const started = Date.now();
  await f.server.close();
  const took = Date.now() - started;
  t.ok(took >= 250 && took < 2000, `close took ${took} ms`);
  const p = await must(c);
  t.equal(opcodeOf(p.buf), ERROR);
  t.match(errorMessageOf(p.buf), /shutting down/i);
  t.equal(f.server.stats().activeTransfers, 0);
});

t.test(
  "a negotiated timeout (RFC 2349) drives retransmission instead of the default",
  async (t) => {
    const f = await startServer(t, { timeoutMs: 10_000 });
    await writeFile(join(f.root, "f"), randomBytes(2000));
    const c = await client(t);
    await c.send(request("f", "octet", [["timeout", "1"]]), f.port);
    const oack = await must(c);
    t.same(oackOptions(oack.buf), new Map([["timeout", "1"]]));
    await c.send(ack(0), oack.rinfo.port);
    t.equal(blockOf((await must(c)).buf), 1);
    const started = Date.now();
    const resent = await must(c, 3000);
    const waited = Date.now() - started;
    t.equal(blockOf(resent.buf), 1, "block 1 resent");
    t.ok(
      waited >= 800 && waited < 2500,
      `after the client's 1 s, not the default 10 s (${waited} ms)`,
    );
  },
);
