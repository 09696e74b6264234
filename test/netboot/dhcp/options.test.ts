import t from "tap";
import {
  decodePxeVendorOptions,
  encodePxeVendorOptions,
  encodeTlv,
  IpxeSub,
  parseTlv,
  readClientId,
  readClientNdi,
  readIpxeOptions,
  readUserClass,
} from "../../../src/netboot/dhcp/options.js";
import { ascii, opt } from "./rfc-builder.js";

t.test("PXE option 43 encoding follows the PXE 2.1 sub-option layout", async (t) => {
  const bytes = encodePxeVendorOptions({
    discoveryControl: 8,
    bootServers: [{ type: 0x8000, addresses: ["10.99.0.1"] }],
    bootMenu: [{ type: 0x8000, description: "boot" }],
    menuPrompt: { timeout: 0, prompt: "PXE" },
  });
  const expected = [
    ...opt(6, [8]),
    // 8: type (2 bytes), count, addresses.
    ...opt(8, [0x80, 0x00, 1, 10, 99, 0, 1]),
    // 9: type (2 bytes), description length, description.
    ...opt(9, [0x80, 0x00, 4, ...ascii("boot")]),
    // 10: timeout then prompt text.
    ...opt(10, [0, ...ascii("PXE")]),
    255,
  ];
  t.same([...bytes], expected);
});

t.test("PXE option 43 decoding, including a truncated list", async (t) => {
  const v = decodePxeVendorOptions(
    Buffer.from([
      ...opt(6, [3]),
      ...opt(8, [0x80, 0x00, 2, 10, 0, 0, 1, 10, 0, 0, 2]),
      ...opt(9, [0x80, 0x00, 4, ...ascii("bios"), 0x00, 0x00, 5, ...ascii("local")]),
      ...opt(10, [5, ...ascii("Press F8")]),
      ...opt(71, [0x80, 0x00, 0x00, 0x01]),
      255,
    ]),
  );
  t.equal(v?.discoveryControl, 3);
  t.same(v?.bootServers, [{ type: 0x8000, addresses: ["10.0.0.1", "10.0.0.2"] }]);
  t.same(v?.bootMenu, [
    { type: 0x8000, description: "bios" },
    { type: 0, description: "local" },
  ]);
  t.same(v?.menuPrompt, { timeout: 5, prompt: "Press F8" });
  t.same(v?.bootItem, { type: 0x8000, layer: 1 });

  // A menu entry that claims more text than there is stops the list, not the decoder.
  const cut = decodePxeVendorOptions(
    Buffer.from([...opt(9, [0x80, 0x00, 9, ...ascii("bi")]), 255]),
  );
  t.same(cut?.bootMenu, []);
  t.equal(decodePxeVendorOptions(Buffer.from([6, 5, 1])), undefined, "overrun: undefined");
});

t.test("TLV reader and writer", async (t) => {
  const r = parseTlv(Buffer.from([0, ...opt(1, [1, 2]), ...opt(1, [3]), 255, 9, 9]));
  t.ok(r.ok && r.ended);
  t.same(r.ok && [...(r.options.get(1) ?? [])], [1, 2, 3]);
  t.same([...encodeTlv([[12, Buffer.alloc(0)]])], [12, 0], "empty value");
  t.throws(() => encodeTlv([[0, Buffer.from([1])]]), RangeError, "pad is not an option");
  t.throws(() => encodeTlv([[255, Buffer.from([1])]]), RangeError, "end is not an option");
});

t.test("user class, client id, NDI, iPXE 175", async (t) => {
  const o = new Map<number, Buffer>([
    [77, Buffer.from("iPXE")],
    [61, Buffer.from([1, 0x52, 0x54, 0, 1, 2, 3])],
    [94, Buffer.from([1, 3, 16])],
    [
      175,
      Buffer.from([
        ...opt(IpxeSub.http, [1]),
        ...opt(IpxeSub.iscsi, [0]),
        ...opt(IpxeSub.version, [1, 21, 1]),
        ...opt(IpxeSub.busId, [1, 0x80, 0x86, 0x10, 0x0e]),
      ]),
    ],
  ]);
  t.equal(readUserClass(o), "iPXE");
  t.same(readClientId(o), { type: 1, id: Buffer.from([0x52, 0x54, 0, 1, 2, 3]) });
  t.same(readClientNdi(o), { type: 1, major: 3, minor: 16 });
  const ipxe = readIpxeOptions(o);
  t.ok(ipxe?.features.has(IpxeSub.http), "feature with value 1");
  t.notOk(ipxe?.features.has(IpxeSub.iscsi), "feature with value 0 is absent");
  t.equal(ipxe?.version, "1.21.1");
  t.same(ipxe?.busId, Buffer.from([1, 0x80, 0x86, 0x10, 0x0e]));
  t.equal(readIpxeOptions(new Map([[175, Buffer.from([19, 4, 1])]])), undefined, "malformed 175");
});
