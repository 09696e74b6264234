// Random and mutated packets: the decoder must never throw, and whatever decodes must go
// through classification, the proxy decision and the encoder without throwing.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { classifyClient } from "../../../src/netboot/dhcp/client.js";
import * as options from "../../../src/netboot/dhcp/options.js";
import { decodeDhcp, encodeDhcp } from "../../../src/netboot/dhcp/packet.js";
import { evaluateProxy, type ProxyContext } from "../../../src/netboot/dhcp/proxy.js";

const FIXTURES = join(import.meta.dirname, "../../fixtures/dhcp");
const captures = readdirSync(FIXTURES)
  .filter((f) => f.endsWith(".hex"))
  .map((f) => Buffer.from(readFileSync(join(FIXTURES, f), "utf8").trim(), "hex"));

// mulberry32: small, seedable, good enough to drive mutations reproducibly.
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int };
}
type Rng = ReturnType<typeof rng>;

function randomBytes(r: Rng, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = r.int(256);
  return b;
}

const header = (r: Rng) => {
  const b = randomBytes(r, 240);
  b[0] = 1 + r.int(2);
  b[1] = 1;
  b[2] = r.int(3) === 0 ? r.int(256) : 6;
  b.writeUInt32BE(0x63825363, 236);
  return b;
};

/** Offsets of option codes in the options field, walking lengths as written. */
function optionOffsets(b: Buffer): number[] {
  const out: number[] = [];
  let i = 240;
  while (i < b.length && b[i] !== 255) {
    if (b[i] === 0) {
      i++;
      continue;
    }
    out.push(i);
    i += 2 + (b[i + 1] ?? 0);
  }
  return out;
}

function randomTlvs(r: Rng, max: number): number[] {
  const out: number[] = [];
  while (out.length < max) {
    const code = [43, 52, 53, 54, 60, 61, 77, 93, 94, 97, 175, r.int(256)][r.int(12)]!;
    const len = r.int(4) === 0 ? r.int(256) : r.int(20);
    out.push(code, len, ...randomBytes(r, Math.min(len, r.int(len + 2))));
  }
  return out.slice(0, max);
}

function mutate(r: Rng, base: Buffer): Buffer {
  const b = Buffer.from(base);
  switch (r.int(8)) {
    case 0: {
      const flips = 1 + r.int(8);
      for (let k = 0; k < flips; k++) {
        const i = r.int(b.length);
        b[i] = b[i]! ^ (1 << r.int(8));
      }
      return b;
    }
    case 1:
      return b.subarray(0, r.int(b.length + 1));
    case 2: {
      // Length-field lie: rewrite the length byte of one option.
      const offs = optionOffsets(b);
      const at = offs[r.int(offs.length)];
      if (at !== undefined && at + 1 < b.length) b[at + 1] = r.int(256);
      return b;
    }
    case 3: {
      // Overload trick: prepend option 52 and fill file/sname with random options.
      const tail = b.subarray(240);
      const ov = [52, 1, r.int(5)];
      const file = randomTlvs(r, 128);
      const sname = randomTlvs(r, 64);
      Buffer.from(file).copy(b, 108);
      Buffer.from(sname).copy(b, 44);
      return Buffer.concat([b.subarray(0, 240), Buffer.from(ov), tail]);
    }
    case 4: {
      // Splice random options in the middle of the options field.
      const offs = optionOffsets(b);
      const at = offs[r.int(offs.length)] ?? 240;
      return Buffer.concat([
        b.subarray(0, at),
        Buffer.from(randomTlvs(r, r.int(60))),
        b.subarray(at),
      ]);
    }
    case 5: {
      // Duplicate an option (RFC 3396 concatenation with odd lengths).
      const offs = optionOffsets(b);
      const at = offs[r.int(offs.length)];
      if (at === undefined) return b;
      const len = 2 + (b[at + 1] ?? 0);
      return Buffer.concat([
        b.subarray(0, at + len),
        b.subarray(at, at + len),
        b.subarray(at + len),
      ]);
    }
    case 6: {
      // Overwrite random bytes inside the options of a known option's value.
      const n = 1 + r.int(16);
      for (let k = 0; k < n; k++) b[240 + r.int(Math.max(1, b.length - 240))] = r.int(256);
      return b;
    }
    default:
      // Drop the end option and everything after a random point, then append junk.
      return Buffer.concat([
        b.subarray(0, 240 + r.int(Math.max(1, b.length - 240))),
        randomBytes(r, r.int(40)),
      ]);
  }
}

const ctx: ProxyContext = {
  serverAddress: "10.99.0.1",
  bootFiles: {
    bios: "undionly.kpxe",
    uefiX64: "snponly.efi",
    uefiArm64: "arm64.efi",
    httpBootUrl: "http://10.99.0.1/ipxe.efi",
  },
  ipxeScriptUrl: (mac) => `http://10.99.0.1/boot/${mac}.ipxe`,
};

const readers = [
  options.readMessageType,
  options.readServerId,
  options.readParamRequestList,
  options.readVendorClass,
  options.readClientId,
  options.readUserClass,
  options.readClientArch,
  options.readClientNdi,
  options.readClientUuid,
  options.readOverload,
  options.readPxeVendorOptions,
  options.readIpxeOptions,
];

interface Stats {
  total: number;
  decoded: number;
  replies: number;
  failures: string[];
}

function runOne(buf: Buffer, s: Stats) {
  s.total++;
  let stage = "decode";
  try {
    const d = decodeDhcp(buf);
    if (!d.ok) {
      if (typeof d.error !== "string" || d.error === "") throw new Error("empty error");
      return;
    }
    s.decoded++;
    stage = "readers";
    // Server packets are never classified further, so read every option of every packet here.
    for (const read of readers) read(d.packet.options);
    stage = "classify";
    const c = classifyClient(d.packet);
    for (const port of [67, 4011] as const) {
      stage = `decide:${port}`;
      const out = evaluateProxy(
        { client: c, port, source: { address: "10.99.0.50", port: 4011 } },
        ctx,
      );
      if (out.action !== "reply") continue;
      s.replies++;
      stage = "encode";
      const wire = encodeDhcp(out.reply);
      if (!decodeDhcp(wire).ok) throw new Error("own reply does not decode");
    }
  } catch (e) {
    if (s.failures.length < 5)
      s.failures.push(`${stage}: ${(e as Error).message} on ${buf.toString("hex")}`);
  }
}

function campaign(seed: number, n: number): Stats {
  const r = rng(seed);
  const s: Stats = { total: 0, decoded: 0, replies: 0, failures: [] };
  for (let i = 0; i < n; i++) {
    const kind = r.int(10);
    let buf: Buffer;
    if (kind === 0) buf = randomBytes(r, r.int(700));
    else if (kind === 1) buf = Buffer.concat([header(r), Buffer.from(randomTlvs(r, r.int(300)))]);
    else {
      let b: Buffer = captures[r.int(captures.length)]!;
      const rounds = r.int(4) === 0 ? 2 : 1;
      for (let k = 0; k < rounds; k++) b = mutate(r, b);
      buf = b;
    }
    runOne(buf, s);
  }
  return s;
}

t.ok(captures.length >= 5, `real captures to mutate (${captures.length})`);

t.test("fixed seed: 200,000 packets", async (t) => {
  const started = process.hrtime.bigint();
  const s = campaign(0x0b007f1e, 200_000);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  t.same(s.failures, [], "nothing threw");
  t.equal(s.total, 200_000);
  // The campaign must exercise the whole pipeline, not just the decoder's error paths.
  t.ok(s.decoded > 25_000, `decoded ${s.decoded}`);
  t.ok(s.replies > 10_000, `replies built ${s.replies}`);
  t.comment(`${s.total} packets, ${s.decoded} decoded, ${s.replies} replies, ${ms.toFixed(0)} ms`);
});

t.test("fresh seed: 20,000 packets", async (t) => {
  const seed = (Date.now() ^ process.pid) >>> 0;
  const s = campaign(seed, 20_000);
  t.same(s.failures, [], `nothing threw (seed ${seed})`);
});
