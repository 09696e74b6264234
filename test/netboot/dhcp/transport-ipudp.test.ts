import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { buildIpv4Udp, internetChecksum, parseIpv4Udp } from "../../../src/netboot/dhcp/ipudp.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

t.test("internet checksum: the worked example of RFC 1071 section 3", async (t) => {
  // RFC 1071: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2; the checksum is its complement.
  const data = hex("00 01 f2 03 f4 f5 f6 f7");
  t.equal(internetChecksum(data), ~0xddf2 & 0xffff);
  // Summing in parts must not change the result, even when a part has an odd length.
  t.equal(internetChecksum(data.subarray(0, 3), data.subarray(3, 4), data.subarray(4)), 0x220d);
  // An odd total length is padded with one zero byte at the end (RFC 1071 section 4.1).
  t.equal(internetChecksum(hex("01")), internetChecksum(hex("0100")));
  // Data followed by its own checksum sums to zero: the receiver's check.
  const withSum = Buffer.alloc(data.length + 2);
  data.copy(withSum);
  withSum.writeUInt16BE(internetChecksum(data), data.length);
  t.equal(internetChecksum(withSum), 0);
});

// tshark is an independent implementation of both checksums and of the header layout.
const tsharkMissing = spawnSync("tshark", ["--version"]).status !== 0;

t.test(
  "built packets are well-formed IPv4/UDP according to tshark",
  { skip: tsharkMissing ? "needs tshark (Debian package tshark)" : false },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), `bf-dhcp-transport-${process.pid}-`));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const cases = [
      {
        srcAddress: "10.99.0.1",
        dstAddress: "255.255.255.255",
        srcPort: 67,
        dstPort: 68,
        size: 300,
      },
      {
        srcAddress: "192.168.7.254",
        dstAddress: "192.168.7.23",
        srcPort: 4011,
        dstPort: 68,
        size: 301,
      },
      {
        srcAddress: "172.16.0.1",
        dstAddress: "172.16.255.255",
        srcPort: 40000,
        dstPort: 4011,
        size: 0,
      },
      { srcAddress: "10.0.0.1", dstAddress: "10.0.0.2", srcPort: 65535, dstPort: 1, size: 1472 },
    ];
    const packets = cases.map((c, i) =>
      buildIpv4Udp({
        ...c,
        id: i + 1,
        payload: Buffer.from(Array.from({ length: c.size }, (_, j) => (j * 7 + i) & 0xff)),
      }),
    );
    // pcap file, link type 101 (LINKTYPE_RAW: the packet starts at the IP header).
    const global = Buffer.alloc(24);
    global.writeUInt32LE(0xa1b2c3d4, 0);
    global.writeUInt16LE(2, 4);
    global.writeUInt16LE(4, 6);
    global.writeUInt32LE(65535, 16);
    global.writeUInt32LE(101, 20);
    const records = packets.flatMap((p) => {
      const h = Buffer.alloc(16);
      h.writeUInt32LE(p.length, 8);
      h.writeUInt32LE(p.length, 12);
      return [h, p];
    });
    const file = join(dir, "built.pcap");
    writeFileSync(file, Buffer.concat([global, ...records]));
    const out = execFileSync(
      "tshark",
      [
        "-r",
        file,
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "--disable-protocol",
        "dhcp",
        "--disable-protocol",
        "pxe",
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "udp.length",
        "-e",
        "ip.checksum.status",
        "-e",
        "udp.checksum.status",
        "-e",
        "data",
      ],
      { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] },
    );
    const lines = out.trim().split("\n");
    t.equal(lines.length, cases.length, "tshark read every packet");
    cases.forEach((c, i) => {
      const [src, dst, sport, dport, ulen, ipOk, udpOk, data] = (lines[i] ?? "").split(",");
      t.same(
        { src, dst, sport: Number(sport), dport: Number(dport), ulen: Number(ulen) },
        {
          src: c.srcAddress,
          dst: c.dstAddress,
          sport: c.srcPort,
          dport: c.dstPort,
          ulen: 8 + c.size,
        },
        `packet ${i}: addresses, ports, length`,
      );
      // Wireshark's checksum status: 1 is "Good".
      t.equal(ipOk, "1", `packet ${i}: IP header checksum good`);
      t.equal(udpOk, "1", `packet ${i}: UDP checksum good`);
      t.equal(data ?? "", packets[i]!.subarray(28).toString("hex"), `packet ${i}: payload`);
    });
  },
);

const sample = () =>
  buildIpv4Udp({
    srcAddress: "10.99.0.23",
    dstAddress: "10.99.0.1",
    srcPort: 68,
    dstPort: 4011,
    payload: Buffer.from("a PXE request, more or less"),
  });

t.test("parse reads back what was built", async (t) => {
  const r = parseIpv4Udp(sample());
  if (!r.ok) throw new Error(`dropped: ${r.reason}`);
  t.same(
    { ...r.datagram, payload: r.datagram.payload.toString() },
    {
      srcAddress: "10.99.0.23",
      dstAddress: "10.99.0.1",
      srcPort: 68,
      dstPort: 4011,
      ttl: 64,
      payload: "a PXE request, more or less",
      checksumVerified: true,
    },
  );
});

t.test("a computed UDP checksum of zero is sent as 0xffff (RFC 768)", async (t) => {
  const base = { srcAddress: "10.1.1.1", dstAddress: "10.1.1.2", srcPort: 67, dstPort: 68 };
  // With a zero word W in the payload the checksum is C = ~S; making W = C turns the
  // sum into S + ~S = 0xffff, whose complement is zero.
  const c = buildIpv4Udp({ ...base, payload: Buffer.alloc(2) }).readUInt16BE(26);
  const payload = Buffer.alloc(2);
  payload.writeUInt16BE(c);
  const p = buildIpv4Udp({ ...base, payload });
  t.equal(p.readUInt16BE(26), 0xffff);
  const r = parseIpv4Udp(p);
  t.ok(r.ok && r.datagram.checksumVerified, "0xffff verifies as a valid checksum");
});

t.test("link-layer padding past the IP total length is ignored", async (t) => {
  const r = parseIpv4Udp(Buffer.concat([sample(), Buffer.alloc(18)]));
  t.ok(r.ok && r.datagram.payload.toString() === "a PXE request, more or less");
});

t.test("IP options (IHL > 5) are skipped", async (t) => {
  const p = sample();
  // Rebuild with 4 bytes of options (a NOP-padded end of list), per RFC 791.
  const withOpts = Buffer.concat([p.subarray(0, 20), hex("01010100"), p.subarray(20)]);
  withOpts[0] = 0x46;
  withOpts.writeUInt16BE(withOpts.length, 2);
  withOpts.writeUInt16BE(0, 10);
  withOpts.writeUInt16BE(internetChecksum(withOpts.subarray(0, 24)), 10);
  const r = parseIpv4Udp(withOpts);
  t.ok(r.ok, "accepted");
  t.equal(r.ok && r.datagram.dstPort, 4011);
});

t.test("UDP checksum 0 means none was sent (RFC 768)", async (t) => {
  const p = sample();
  p.writeUInt16BE(0, 26);
  const r = parseIpv4Udp(p);
  t.ok(r.ok, "accepted");
  t.equal(r.ok && r.datagram.checksumVerified, false);
});

t.test("a checksum left for offload (pseudo-header sum only) is accepted unverified", async (t) => {
  const p = sample();
  const udpLength = p.length - 20;
  const ph = Buffer.alloc(12);
  p.copy(ph, 0, 12, 20);
  ph[9] = 17;
  ph.writeUInt16BE(udpLength, 10);
  // What Linux leaves in the field for CHECKSUM_PARTIAL: the folded pseudo-header sum.
  p.writeUInt16BE(~internetChecksum(ph) & 0xffff, 26);
  const r = parseIpv4Udp(p);
  t.ok(r.ok, "accepted");
  t.equal(r.ok && r.datagram.checksumVerified, false);
});

/** Writes one byte (or a 16-bit word) and hands the packet back, for one-line mutations. */
function put8(p: Buffer, offset: number, value: number): Buffer {
  p.writeUInt8(value, offset);
  return p;
}
function put16(p: Buffer, offset: number, value: number): Buffer {
  p.writeUInt16BE(value, offset);
  return p;
}

t.test("malformed framing is reported, never thrown", async (t) => {
  const cases: [string, (p: Buffer) => Buffer, string][] = [
    ["empty", () => Buffer.alloc(0), "short"],
    ["19 bytes", (p) => p.subarray(0, 19), "short"],
    ["IP version 6", (p) => put8(p, 0, 0x65), "not-ipv4"],
    ["IHL 4 (below the 20-byte minimum)", (p) => put8(p, 0, 0x44), "bad-header-length"],
    ["IHL 15 in a 30-byte packet", (p) => put8(p, 0, 0x4f).subarray(0, 30), "bad-header-length"],
    ["total length beyond the packet", (p) => put16(p, 2, p.length + 1), "bad-total-length"],
    ["total length leaves no room for UDP", (p) => put16(p, 2, 27), "bad-total-length"],
    ["IP header checksum wrong", (p) => put8(p, 8, 63), "bad-ip-checksum"],
    ["protocol TCP", (p) => fixIpSum(put8(p, 9, 6)), "not-udp"],
    ["more-fragments flag", (p) => fixIpSum(put8(p, 6, 0x20)), "fragment"],
    ["fragment offset", (p) => fixIpSum(put16(p, 6, 0x0001)), "fragment"],
    ["UDP length 7", (p) => put16(p, 24, 7), "bad-udp-length"],
    ["UDP length past the IP payload", (p) => put16(p, 24, p.length - 19), "bad-udp-length"],
    ["payload byte flipped", (p) => put8(p, 40, p[40]! ^ 0xff), "bad-udp-checksum"],
    [
      "source address changed (pseudo-header)",
      (p) => fixIpSum(put8(p, 15, 99)),
      "bad-udp-checksum",
    ],
  ];
  for (const [name, mutate, reason] of cases) {
    const r = parseIpv4Udp(mutate(sample()));
    t.same(r, { ok: false, reason }, name);
  }
});

function fixIpSum(p: Buffer): Buffer {
  p.writeUInt16BE(0, 10);
  p.writeUInt16BE(internetChecksum(p.subarray(0, 20)), 10);
  return p;
}

t.test("build refuses what cannot be framed", async (t) => {
  const base = { srcAddress: "10.0.0.1", dstAddress: "10.0.0.2", srcPort: 67, dstPort: 68 };
  t.throws(() => buildIpv4Udp({ ...base, srcAddress: "fe80::1", payload: Buffer.alloc(1) }));
  t.throws(() => buildIpv4Udp({ ...base, dstPort: 65536, payload: Buffer.alloc(1) }));
  t.throws(() => buildIpv4Udp({ ...base, payload: Buffer.alloc(0xffff - 27) }), RangeError);
  t.equal(buildIpv4Udp({ ...base, payload: Buffer.alloc(0xffff - 28) }).length, 0xffff);
});
