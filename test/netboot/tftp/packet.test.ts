// Request and packet parsing against byte layouts written out from RFC 1350 (section 5) and
// RFC 2347 (option extension).

import t from "tap";
import { toNetascii } from "../../../src/netboot/tftp/netascii.js";
import {
  encodeAck,
  encodeDataHeader,
  encodeError,
  encodeOack,
  parseTftpPacket,
  parseTftpRequest,
} from "../../../src/netboot/tftp/packet.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

t.test("RRQ with options, as curl sends it", async (t) => {
  // 00 01 "snponly.efi" 00 "octet" 00 "tsize" 00 "0" 00 "blksize" 00 "1468" 00
  const buf = Buffer.concat([
    hex("0001"),
    Buffer.from("snponly.efi\0octet\0tsize\x000\0blksize\x001468\0", "latin1"),
  ]);
  const r = parseTftpRequest(buf);
  t.ok(r.ok);
  if (!r.ok) return;
  t.equal(r.request.op, "RRQ");
  t.equal(r.request.filename, "snponly.efi");
  t.equal(r.request.mode, "octet");
  t.same(
    [...r.request.options],
    [
      ["tsize", "0"],
      ["blksize", "1468"],
    ],
  );
});

t.test("mode and option names are case-insensitive (RFC 1350, RFC 2347)", async (t) => {
  const buf = Buffer.concat([hex("0001"), Buffer.from("a\0NetASCII\0BlkSize\x00512\0", "latin1")]);
  const r = parseTftpRequest(buf);
  t.ok(r.ok);
  if (!r.ok) return;
  t.equal(r.request.mode, "netascii");
  t.equal(r.request.options.get("blksize"), "512");
});

t.test("WRQ parses as a write request", async (t) => {
  const r = parseTftpRequest(Buffer.concat([hex("0002"), Buffer.from("x\0octet\0")]));
  t.ok(r.ok && r.request.op === "WRQ");
});

t.test("first occurrence of a repeated option wins", async (t) => {
  const r = parseTftpRequest(
    Buffer.concat([hex("0001"), Buffer.from("f\0octet\0blksize\x001024\0BLKSIZE\x008\0")]),
  );
  t.equal(r.ok && r.request.options.get("blksize"), "1024");
});

t.test("NUL padding and a dangling option name after the mode are tolerated", async (t) => {
  const padded = Buffer.concat([hex("0001"), Buffer.from("f\0octet\0"), Buffer.alloc(20)]);
  const r1 = parseTftpRequest(padded);
  t.ok(r1.ok);
  t.equal(r1.ok && r1.request.options.size, 0);
  const dangling = Buffer.concat([hex("0001"), Buffer.from("f\0octet\0tsize\0")]);
  const r2 = parseTftpRequest(dangling);
  t.ok(r2.ok);
  t.equal(r2.ok && r2.request.options.size, 0);
});

t.test("malformed requests are result values with an error code", async (t) => {
  const cases: Array<[string, Buffer, number]> = [
    ["empty", Buffer.alloc(0), 4],
    ["only the opcode", hex("0001"), 4],
    ["no NUL after the filename", Buffer.concat([hex("0001"), Buffer.from("file")]), 4],
    ["no NUL after the mode", Buffer.concat([hex("0001"), Buffer.from("file\0octet")]), 4],
    ["empty filename", Buffer.concat([hex("0001"), Buffer.from("\0octet\0")]), 4],
    ["unknown mode", Buffer.concat([hex("0001"), Buffer.from("f\0binary\0")]), 4],
    ["DATA is not a request", hex("0003 0001 41"), 4],
    ["opcode 0", hex("0000 4100 6f6374657400"), 4],
    ["invalid UTF-8 in the name", Buffer.concat([hex("0001 ff fe 00"), Buffer.from("octet\0")]), 2],
  ];
  for (const [name, buf, code] of cases) {
    const r = parseTftpRequest(buf);
    t.equal(r.ok, false, name);
    if (!r.ok) t.equal(r.errorCode, code, `${name}: error code`);
  }
});

t.test("a NUL inside the name ends it, so the rest becomes the mode and is refused", async (t) => {
  const r = parseTftpRequest(
    Buffer.concat([hex("0001"), Buffer.from("ok.bin\0../../etc/passwd\0octet\0")]),
  );
  t.equal(r.ok, false);
});

t.test("parseTftpPacket reads ACK, ERROR and OACK", async (t) => {
  t.same(parseTftpPacket(hex("0004 ffff")), { ok: true, packet: { op: "ACK", block: 65535 } });
  const err = parseTftpPacket(Buffer.concat([hex("0005 0008"), Buffer.from("User aborted\0")]));
  t.same(err, { ok: true, packet: { op: "ERROR", code: 8, message: "User aborted" } });
  const oack = parseTftpPacket(Buffer.concat([hex("0006"), Buffer.from("tsize\x00123\0")]));
  t.ok(oack.ok && oack.packet.op === "OACK" && oack.packet.options.get("tsize") === "123");
  t.equal(parseTftpPacket(hex("0009 0000")).ok, false, "unknown opcode");
  t.equal(parseTftpPacket(hex("0004")).ok, false, "short ACK");
});

t.test("encoders produce the RFC layouts", async (t) => {
  t.same(encodeDataHeader(65536 + 7), hex("0003 0007"), "block number wraps at 65536");
  t.same(encodeAck(258), hex("0004 0102"));
  t.same(
    encodeError(2, "Access violation"),
    Buffer.concat([hex("0005 0002"), Buffer.from("Access violation\0")]),
  );
  t.same(
    encodeOack([
      ["blksize", "1468"],
      ["tsize", "42"],
    ]),
    Buffer.concat([hex("0006"), Buffer.from("blksize\x001468\0tsize\x0042\0")]),
  );
  t.same(
    encodeError(0, "é\n"),
    Buffer.concat([hex("0005 0000"), Buffer.from("??\0")]),
    "non-ASCII replaced",
  );
});

t.test("netascii: LF becomes CR LF, CR becomes CR NUL (RFC 764)", async (t) => {
  t.same(toNetascii(Buffer.from("a\nb\rc\r\n")), Buffer.from("a\r\nb\r\0c\r\0\r\n", "latin1"));
  const plain = Buffer.from("no line ends");
  t.same(toNetascii(plain), plain);
});
