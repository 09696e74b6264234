import t, { type Test } from "tap";
import {
  Opt,
  readClientArch,
  readClientUuid,
  readMessageType,
} from "../../../src/netboot/dhcp/options.js";
import {
  type DhcpPacket,
  decodeDhcp,
  encodeDhcp,
  macOf,
  parseMac,
} from "../../../src/netboot/dhcp/packet.js";
import { ascii, opt, rawPacket } from "./rfc-builder.js";

function mustDecode(t: Test, buf: Buffer): DhcpPacket {
  const r = decodeDhcp(buf);
  if (!r.ok) {
    t.fail(`decode failed: ${r.error}`);
    throw new Error(r.error);
  }
  return r.packet;
}

t.test("fixed fields at the RFC 2131 figure 1 offsets", async (t) => {
  const buf = rawPacket({
    op: 1,
    htype: 1,
    hlen: 6,
    hops: 2,
    xid: 0xdeadbeef,
    secs: 513,
    flags: 0x8000,
    ciaddr: [10, 0, 0, 1],
    yiaddr: [10, 0, 0, 2],
    siaddr: [10, 0, 0, 3],
    giaddr: [10, 0, 0, 4],
    chaddr: [0xaa, 0xbb, 0xcc, 0x0d, 0x0e, 0x0f],
    sname: ascii("server1"),
    file: ascii("boot/file.efi"),
    options: [...opt(53, [1]), 255],
  });
  const p = mustDecode(t, buf);
  t.equal(p.op, 1);
  t.equal(p.hops, 2);
  t.equal(p.xid, 0xdeadbeef);
  t.equal(p.secs, 513);
  t.equal(p.flags, 0x8000);
  t.equal(p.ciaddr, "10.0.0.1");
  t.equal(p.yiaddr, "10.0.0.2");
  t.equal(p.siaddr, "10.0.0.3");
  t.equal(p.giaddr, "10.0.0.4");
  t.equal(macOf(p), "aa:bb:cc:0d:0e:0f", "MAC is lowercase with colons");
  t.equal(p.sname, "server1");
  t.equal(p.file, "boot/file.efi");
  t.equal(readMessageType(p.options), 1);
});

t.test("errors say what was wrong", async (t) => {
  const good = rawPacket({ options: [...opt(53, [1]), 255] });
  const short = decodeDhcp(good.subarray(0, 239));
  t.notOk(short.ok);
  t.match(!short.ok && short.error, /too short/);
  t.match((decodeDhcp(Buffer.alloc(0)) as { error: string }).error, /too short/);

  const cookie = decodeDhcp(rawPacket({ cookie: [99, 130, 83, 98], options: [255] }));
  t.match(!cookie.ok && cookie.error, /magic cookie/);

  const op = decodeDhcp(rawPacket({ op: 3, options: [255] }));
  t.match(!op.ok && op.error, /op/);

  const hlen = decodeDhcp(rawPacket({ hlen: 17, options: [255] }));
  t.match(!hlen.ok && hlen.error, /hardware address length/);

  // Option 60 claims 20 bytes, only 3 follow.
  const overrun = decodeDhcp(rawPacket({ options: [...opt(53, [1]), 60, 20, 65, 66, 67] }));
  t.match(!overrun.ok && overrun.error, /option 60 .*claims 20 bytes/);

  const noLen = decodeDhcp(rawPacket({ options: [...opt(53, [1]), 60] }));
  t.match(!noLen.ok && noLen.error, /no length/);

  const badType = decodeDhcp(rawPacket({ options: [53, 2, 1, 1, 255] }));
  t.match(!badType.ok && badType.error, /option 53/);
});

t.test("pad is skipped, end stops, a missing end is tolerated", async (t) => {
  const p = mustDecode(
    t,
    rawPacket({ options: [0, 0, ...opt(53, [3]), 0, 255, ...opt(60, ascii("after-end"))] }),
  );
  t.equal(readMessageType(p.options), 3);
  t.notOk(p.options.has(60), "bytes after end are not options");

  const noEnd = mustDecode(t, rawPacket({ options: [...opt(53, [1]), ...opt(60, ascii("X"))] }));
  t.equal(noEnd.options.get(60)?.toString(), "X");
});

t.test("RFC 3396: repeated options are concatenated in order", async (t) => {
  const p = mustDecode(
    t,
    rawPacket({
      options: [...opt(60, ascii("PXE")), ...opt(53, [1]), ...opt(60, ascii("Client")), 255],
    }),
  );
  t.equal(p.options.get(60)?.toString(), "PXEClient");
});

t.test("option 52 overload: options read from file, then sname", async (t) => {
  // Value 3: both fields hold options. Option 60 split across all three areas must read
  // options-field part + file part + sname part (RFC 3396 section 5).
  const p = mustDecode(
    t,
    rawPacket({
      options: [...opt(52, [3]), ...opt(53, [1]), ...opt(60, ascii("PXE")), 255],
      file: [...opt(60, ascii("Cli")), ...opt(93, [0, 7]), 255],
      sname: [...opt(60, ascii("ent")), 255],
    }),
  );
  t.equal(p.options.get(60)?.toString(), "PXEClient");
  t.same(readClientArch(p.options), [7]);
  t.equal(p.file, "", "file held options, not a name");
  t.equal(p.sname, "", "sname held options, not a name");

  const fileOnly = mustDecode(
    t,
    rawPacket({
      options: [...opt(52, [1]), ...opt(53, [1]), 255],
      file: [...opt(60, ascii("PXEClient")), 255],
      sname: ascii("still-a-name"),
    }),
  );
  t.equal(fileOnly.options.get(60)?.toString(), "PXEClient");
  t.equal(fileOnly.sname, "still-a-name", "sname is a name when 52 is 1");

  const notOverloaded = mustDecode(
    t,
    rawPacket({ options: [...opt(53, [1]), 255], file: [...opt(60, ascii("PXEClient")), 255] }),
  );
  t.notOk(notOverloaded.options.has(60), "without 52 the file field is not read as options");

  const bad52 = decodeDhcp(rawPacket({ options: [...opt(52, [4]), 255] }));
  t.match(!bad52.ok && bad52.error, /option 52/);

  const overrunFile = decodeDhcp(
    rawPacket({ options: [...opt(52, [1]), 255], file: [...new Array(126).fill(0), 60, 9] }),
  );
  t.match(!overrunFile.ok && overrunFile.error, /file field/);

  // 52 inside the file field must not change which fields are read.
  const nested = mustDecode(
    t,
    rawPacket({
      options: [...opt(52, [1]), 255],
      file: [...opt(52, [2]), 255],
      sname: ascii("name"),
    }),
  );
  t.equal(nested.sname, "name");
  t.same([...(nested.options.get(52) ?? [])], [1]);
});

t.test("option 93 lists, option 97 shapes", async (t) => {
  const p = mustDecode(
    t,
    rawPacket({ options: [...opt(53, [1]), ...opt(93, [0, 7, 0, 16]), 255] }),
  );
  t.same(readClientArch(p.options), [7, 16]);

  const oddArch = decodeDhcp(rawPacket({ options: [...opt(93, [0, 7, 0]), 255] }));
  t.match(!oddArch.ok && oddArch.error, /option 93/);

  const uuidBytes = [
    0, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
    0xff,
  ];
  const withUuid = mustDecode(t, rawPacket({ options: [...opt(97, uuidBytes), 255] }));
  // SMBIOS 2.6 7.2.1: the first three fields are stored little-endian.
  t.equal(readClientUuid(withUuid.options), "33221100-5544-7766-8899-aabbccddeeff");

  const noUuid = mustDecode(t, rawPacket({ options: [...opt(53, [1]), 255] }));
  t.equal(readClientUuid(noUuid.options), undefined, "absent UUID is fine");

  const shortUuid = decodeDhcp(rawPacket({ options: [...opt(97, uuidBytes.slice(0, 16)), 255] }));
  t.match(!shortUuid.ok && shortUuid.error, /option 97.*length 16/);
  const typed = decodeDhcp(rawPacket({ options: [...opt(97, [1, ...uuidBytes.slice(1)]), 255] }));
  t.match(!typed.ok && typed.error, /option 97.*type 1/);
});

t.test("encode writes what RFC 2131 and RFC 1542 expect", async (t) => {
  const chaddr = Buffer.alloc(16);
  parseMac("52:54:00:BF:00:09")!.copy(chaddr);
  const packet: DhcpPacket = {
    op: 2,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0x01020304,
    secs: 0,
    flags: 0x8000,
    ciaddr: "0.0.0.0",
    yiaddr: "0.0.0.0",
    siaddr: "10.99.0.1",
    giaddr: "0.0.0.0",
    chaddr,
    sname: "",
    file: "undionly.kpxe",
    options: new Map([
      [Opt.serverId, Buffer.from([10, 99, 0, 1])],
      [Opt.messageType, Buffer.from([2])],
      [Opt.vendorClass, Buffer.from("PXEClient")],
    ]),
  };
  const buf = encodeDhcp(packet);
  t.ok(buf.length >= 300, `at least 300 bytes (got ${buf.length})`);
  t.same([...buf.subarray(236, 240)], [99, 130, 83, 99], "magic cookie at 236");
  t.same([...buf.subarray(240, 243)], [53, 1, 2], "message type is the first option");
  t.same([...buf.subarray(20, 24)], [10, 99, 0, 1], "siaddr at 20");
  t.same([...buf.subarray(28, 34)], [0x52, 0x54, 0x00, 0xbf, 0x00, 0x09], "chaddr at 28");
  t.equal(buf.subarray(108, 108 + 13).toString(), "undionly.kpxe", "file at 108");
  t.equal(buf[108 + 13], 0, "file is NUL-terminated");
  const end = buf.indexOf(255, 240);
  t.ok(end > 240, "end option written");
  t.ok(
    buf.subarray(end + 1).every((x) => x === 0),
    "padding after end is zero",
  );

  const back = mustDecode(t, buf);
  t.same(back, packet, "decode(encode(p)) gives p back");
});

t.test("encode splits long options (RFC 3396) and refuses what cannot fit", async (t) => {
  const long = Buffer.alloc(600, 0x41);
  const p: DhcpPacket = {
    op: 2,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 1,
    secs: 0,
    flags: 0,
    ciaddr: "0.0.0.0",
    yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0",
    giaddr: "0.0.0.0",
    chaddr: Buffer.alloc(16),
    sname: "",
    file: "",
    options: new Map([[67, long]]),
  };
  const buf = encodeDhcp(p);
  // 600 bytes -> items of 255, 255, 90.
  t.same([buf[240], buf[241]], [67, 255]);
  t.same([buf[240 + 257], buf[240 + 258]], [67, 255]);
  t.same([buf[240 + 514], buf[240 + 515]], [67, 90]);
  t.same(mustDecode(t, buf).options.get(67), long);

  t.throws(() => encodeDhcp({ ...p, file: "x".repeat(128) }), RangeError);
  t.throws(() => encodeDhcp({ ...p, sname: "x".repeat(64) }), RangeError);
  t.throws(() => encodeDhcp({ ...p, siaddr: "10.0.0.256" }), RangeError);
});
