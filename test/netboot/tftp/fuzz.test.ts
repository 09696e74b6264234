// 100,000 random and mutated requests through parseTftpRequest: it never throws and always returns
// a well-formed result; well-formed requests built from the RFC layout round-trip exactly. Then a
// share of the same garbage goes over UDP to a running server, which still serves tftp-hpa after.

import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { parseTftpPacket, parseTftpRequest } from "../../../src/netboot/tftp/packet.js";
import { makeTempDir, RawClient, request, sleep, startServer } from "./fixtures/helpers.js";

// Seeded so a failure can be replayed: the seed is printed in the test name.
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.TFTP_FUZZ_SEED ?? Date.now() % 1_000_000);
const rand = prng(SEED);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

const NAMES = [
  "undionly.kpxe",
  "/snponly.efi",
  "../../etc/passwd",
  "a\\b\\c",
  "é.bin",
  "x".repeat(300),
  "",
];
const MODES = ["octet", "netascii", "OCTET", "mail", "binary", ""];
const OPTS = ["blksize", "tsize", "timeout", "windowsize", "BLKSIZE", "multicast", "", "x"];
const VALUES = ["0", "8", "1468", "65464", "65535", "99999999999", "-1", "1e3", "", "abc"];

function randomBytesFromRand(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
}

function structured(): Buffer {
  const opts: Array<[string, string]> = [];
  for (let i = int(5); i > 0; i--) opts.push([pick(OPTS), pick(VALUES)]);
  return request(pick(NAMES), pick(MODES), opts, pick([1, 1, 1, 2, 3, 4, 5, 6, 0, 9]));
}

function mutate(buf: Buffer): Buffer {
  const b = Buffer.from(buf);
  switch (int(6)) {
    case 0: // flip bits
      for (let i = int(4) + 1; i > 0 && b.length > 0; i--) {
        const at = int(b.length);
        b[at] = b[at]! ^ (1 << int(8));
      }
      return b;
    case 1: // truncate
      return b.subarray(0, int(b.length + 1));
    case 2: // drop every NUL
      return Buffer.from(b.filter((x) => x !== 0));
    case 3: // insert NULs
      return Buffer.concat([
        b.subarray(0, int(b.length + 1)),
        Buffer.alloc(int(4) + 1),
        b.subarray(int(b.length + 1)),
      ]);
    case 4: // append garbage
      return Buffer.concat([b, randomBytesFromRand(int(64))]);
    default: // overwrite the opcode
      if (b.length >= 2) b.writeUInt16BE(int(65536), 0);
      return b;
  }
}

function generate(i: number): Buffer {
  if (i % 3 === 0) return randomBytesFromRand(int(600));
  if (i % 3 === 1) return mutate(structured());
  return structured();
}

t.test(`parser survives 100,000 random and mutated requests (seed ${SEED})`, async (t) => {
  let oks = 0;
  let bad = 0;
  let threw = 0;
  let shapeErrors = 0;
  for (let i = 0; i < 100_000; i++) {
    const buf = generate(i);
    try {
      const r = parseTftpRequest(buf);
      parseTftpPacket(buf);
      if (r.ok) {
        oks++;
        const q = r.request;
        if (
          (q.op !== "RRQ" && q.op !== "WRQ") ||
          typeof q.filename !== "string" ||
          q.filename.length === 0 ||
          !["octet", "netascii", "mail"].includes(q.mode) ||
          !(q.options instanceof Map)
        ) {
          shapeErrors++;
        }
      } else {
        bad++;
        if (
          !Number.isInteger(r.errorCode) ||
          r.errorCode < 0 ||
          r.errorCode > 8 ||
          typeof r.reason !== "string"
        ) {
          shapeErrors++;
        }
      }
    } catch {
      threw++;
    }
  }
  t.equal(threw, 0, "never throws");
  t.equal(shapeErrors, 0, "every result is well-formed");
  t.ok(oks > 5_000 && bad > 5_000, `both outcomes exercised (${oks} parsed, ${bad} refused)`);
});

t.test(`well-formed requests round-trip exactly (seed ${SEED})`, async (t) => {
  let mismatches = 0;
  for (let i = 0; i < 5_000; i++) {
    const name = `dir${int(10)}/${randomBytesFromRand(int(20) + 1).toString("hex")}`;
    const mode = pick(["octet", "netascii", "OcTeT"]);
    const opts: Array<[string, string]> = [];
    const seen = new Set<string>();
    for (let k = int(4); k > 0; k--) {
      const o = pick(["blksize", "tsize", "timeout", "windowsize"]);
      if (seen.has(o)) continue;
      seen.add(o);
      opts.push([o, String(int(70_000))]);
    }
    const r = parseTftpRequest(request(name, mode, opts));
    if (
      !r.ok ||
      r.request.filename !== name ||
      r.request.mode !== mode.toLowerCase() ||
      JSON.stringify([...r.request.options]) !== JSON.stringify(opts)
    ) {
      mismatches++;
    }
  }
  t.equal(mismatches, 0);
});

t.test(
  "a server fed garbage still serves a real client",
  { skip: existsSync("/usr/bin/tftp") ? false : "needs tftp-hpa's tftp client" },
  async (t) => {
    const f = await startServer(t, { timeoutMs: 200, retries: 1 });
    await writeFile(join(f.root, "undionly.kpxe"), "real content");
    const c = await RawClient.open();
    t.teardown(() => c.close());
    for (let i = 0; i < 3_000; i++) {
      await c.send(generate(i), f.port);
      if (i % 200 === 0) await sleep(5); // pace: loopback drops datagrams sent in a tight loop
    }
    // Garbage that happened to be a valid RRQ started transfers we never ACK: let them time out.
    await sleep(800);
    const out = await makeTempDir(t, "fuzzout");
    const code = await new Promise<number>((resolve) =>
      execFile(
        "tftp",
        ["-m", "binary", "127.0.0.1", String(f.port), "-c", "get", "undionly.kpxe", "got"],
        { cwd: out, timeout: 30_000 },
        (err) => resolve(err === null ? 0 : 1),
      ),
    );
    t.equal(code, 0);
    t.equal(await readFile(join(out, "got"), "utf8"), "real content");
  },
);
