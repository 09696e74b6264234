import t from "tap";
import { type ClientInfo, classifyClient } from "../../../src/netboot/dhcp/client.js";
import {
  decodePxeVendorOptions,
  Opt,
  readClientUuid,
  readMessageType,
  readPxeVendorOptions,
} from "../../../src/netboot/dhcp/options.js";
import { decodeDhcp, encodeDhcp } from "../../../src/netboot/dhcp/packet.js";
import {
  bootFileFor,
  decideProxyReply,
  evaluateProxy,
  type ProxyContext,
  type ProxyPort,
  pxeVendorOptionsFor,
} from "../../../src/netboot/dhcp/proxy.js";
import { ascii, opt, rawPacket } from "./rfc-builder.js";

const MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MAC_STR = "52:54:00:12:34:56";
const UUID = [0, ...Array.from({ length: 16 }, (_, i) => i + 1)];

interface ReqSpec {
  type?: number;
  vendor?: string;
  arch?: number[];
  ipxe?: boolean;
  userClass?: string;
  uuid?: boolean;
  giaddr?: number[];
  ciaddr?: number[];
  prl?: number[];
  extra?: number[];
}

function client(s: ReqSpec): ClientInfo {
  const o: number[] = [...opt(53, [s.type ?? 1])];
  if (s.vendor !== undefined) o.push(...opt(60, ascii(s.vendor)));
  if (s.arch)
    o.push(
      ...opt(
        93,
        s.arch.flatMap((a) => [a >> 8, a & 0xff]),
      ),
    );
  if (s.userClass !== undefined) o.push(...opt(77, ascii(s.userClass)));
  if (s.ipxe) o.push(...opt(175, [...opt(19, [1]), ...opt(235, [1, 21, 1])]));
  if (s.uuid) o.push(...opt(97, UUID));
  if (s.prl) o.push(...opt(55, s.prl));
  if (s.extra) o.push(...s.extra);
  o.push(255);
  const r = decodeDhcp(
    rawPacket({
      chaddr: MAC,
      xid: 0xcafe0001,
      flags: 0x8000,
      giaddr: s.giaddr ?? [0, 0, 0, 0],
      ciaddr: s.ciaddr ?? [0, 0, 0, 0],
      options: o,
    }),
  );
  if (!r.ok) throw new Error(r.error);
  return classifyClient(r.packet);
}

const bios = (x: ReqSpec = {}) =>
  client({ vendor: "PXEClient:Arch:00000:UNDI:002001", arch: [0], uuid: true, ...x });
const uefi = (x: ReqSpec = {}) =>
  client({ vendor: "PXEClient:Arch:00007:UNDI:003000", arch: [7], uuid: true, ...x });

const ctx: ProxyContext = {
  serverAddress: "10.99.0.1",
  bootFiles: { bios: "undionly.kpxe", uefiX64: "snponly.efi" },
  ipxeScriptUrl: (mac) => `http://10.99.0.1/boot/${mac}.ipxe`,
};
const src = { address: "10.99.0.77", port: 4011 };

function decide(c: ClientInfo, port: ProxyPort, context: ProxyContext = ctx) {
  return decideProxyReply(
    { client: c, port, source: port === 4011 ? src : { address: "0.0.0.0", port: 68 } },
    context,
  );
}

t.test("only PXE clients are answered, never with an address", async (t) => {
  t.equal(decide(client({}), 67), null, "plain DHCP client without option 60");
  t.equal(decide(client({ vendor: "MSFT 5.0" }), 67), null, "Windows DHCP client");
  t.equal(decide(client({ vendor: "android-dhcp-13" }), 4011), null);
  for (const [name, c, port] of [
    ["bios discover", bios(), 67],
    ["uefi discover", uefi(), 67],
    ["bios 4011", bios({ type: 3 }), 4011],
    ["uefi 4011", uefi({ type: 3 }), 4011],
    ["ipxe discover", bios({ ipxe: true, userClass: "iPXE" }), 67],
  ] as const) {
    const d = decide(c, port);
    t.ok(d, `${name} answered`);
    t.equal(d?.reply.yiaddr, "0.0.0.0", `${name}: yiaddr 0.0.0.0`);
  }
});

t.test("message types and ports", async (t) => {
  const offer = decide(bios(), 67);
  t.equal(readMessageType(offer!.reply.options), 2, "DISCOVER on 67 -> OFFER");
  t.equal(offer!.reply.op, 2, "BOOTREPLY");
  t.equal(offer!.reply.xid, 0xcafe0001, "xid echoed");

  for (const [name, c] of [
    ["bios", bios({ type: 3 })],
    ["uefi", uefi({ type: 3 })],
    ["ipxe", bios({ type: 3, ipxe: true })],
  ] as const) {
    const ack = decide(c, 4011);
    t.equal(readMessageType(ack!.reply.options), 5, `${name}: REQUEST on 4011 -> ACK`);
  }
  t.equal(decide(bios({ type: 3 }), 67), null, "REQUEST on 67 is the address server's");
  t.equal(decide(uefi({ type: 3 }), 67), null);
  t.equal(decide(bios({ type: 1 }), 4011), null, "DISCOVER on 4011 ignored");
  for (const type of [4, 5, 6, 7]) {
    t.equal(decide(bios({ type }), 67), null, `type ${type} on 67 ignored`);
    t.equal(decide(bios({ type }), 4011), null, `type ${type} on 4011 ignored`);
  }
  const inform = decide(bios({ type: 8, ciaddr: [10, 99, 0, 50] }), 67);
  t.equal(readMessageType(inform!.reply.options), 5, "INFORM on 67 -> ACK");
  t.same(inform!.destination, { address: "10.99.0.50", port: 68, broadcast: false });
  t.equal(inform!.reply.ciaddr, "10.99.0.50", "ACK echoes ciaddr (RFC 2131 table 3)");
  t.equal(decide(bios({ type: 8 }), 67), null, "INFORM without ciaddr ignored");
  t.equal(
    readMessageType(decide(bios({ type: 8 }), 4011)!.reply.options),
    5,
    "INFORM on 4011 -> ACK",
  );
});

t.test("reply options: 54, 60, 97, siaddr, file", async (t) => {
  const d = decide(uefi(), 67)!;
  const o = d.reply.options;
  t.same([...(o.get(Opt.serverId) ?? [])], [10, 99, 0, 1], "54 is the server address");
  t.equal(o.get(Opt.vendorClass)?.toString(), "PXEClient");
  t.equal(readClientUuid(o), "04030201-0605-0807-090a-0b0c0d0e0f10", "97 echoed");
  t.same([...(o.get(Opt.clientUuid) ?? [])], UUID, "97 echoed byte for byte");
  t.equal(d.reply.siaddr, "10.99.0.1");
  t.equal(d.reply.file, "snponly.efi");
  t.same([...d.reply.chaddr.subarray(0, 6)], MAC);
  t.notOk(o.has(Opt.bootfileName), "67 only when asked for");

  const noUuid = decide(uefi({ uuid: false }), 67)!;
  t.notOk(noUuid.reply.options.has(Opt.clientUuid), "no 97 when the client sent none");

  const asked = decide(uefi({ prl: [1, 3, 67] }), 67)!;
  t.equal(
    asked.reply.options.get(Opt.bootfileName)?.toString(),
    "snponly.efi",
    "67 when requested",
  );

  const http = decide(client({ vendor: "HTTPClient:Arch:00016:UNDI:003000", arch: [16] }), 67, {
    ...ctx,
    bootFiles: { ...ctx.bootFiles, httpBootUrl: "http://10.99.0.1/ipxe/ipxe.efi" },
  })!;
  t.equal(
    http.reply.options.get(Opt.vendorClass)?.toString(),
    "HTTPClient",
    "HTTP boot gets HTTPClient",
  );
  t.equal(http.reply.file, "http://10.99.0.1/ipxe/ipxe.efi");

  // The whole reply must survive the wire.
  const again = decodeDhcp(encodeDhcp(d.reply));
  t.ok(again.ok, "reply encodes and decodes");
});

t.test("a boot URL too long for the file field goes in option 67 only", async (t) => {
  const longUrl = `http://10.99.0.1/boot/${"x".repeat(150)}`;
  const d = decide(bios({ ipxe: true }), 67, { ...ctx, ipxeScriptUrl: () => longUrl })!;
  t.equal(d.reply.file, "");
  t.equal(d.reply.options.get(Opt.bootfileName)?.toString(), longUrl);
  const wire = decodeDhcp(encodeDhcp(d.reply));
  t.equal(wire.ok && wire.packet.options.get(67)?.toString(), longUrl);
});

t.test("option 43 per architecture and port", async (t) => {
  const biosOffer = decide(bios(), 67)!;
  const v = readPxeVendorOptions(biosOffer.reply.options);
  t.equal(v?.discoveryControl, 8, "BIOS: discovery control 8");
  t.ok((v?.bootMenu?.length ?? 0) >= 1, "BIOS: a boot menu for ROMs that need one");
  t.not(v?.bootMenu?.[0]?.type, 0, "menu item is not type 0 (local boot)");
  t.equal(v?.menuPrompt?.timeout, 0, "no prompt delay");

  t.notOk(decide(uefi(), 67)!.reply.options.has(43), "x64 UEFI (7) on 67: no 43");
  t.notOk(
    decide(uefi({ arch: [9], vendor: "PXEClient:Arch:00009:UNDI:003000" }), 67)!.reply.options.has(
      43,
    ),
    "x64 UEFI (9) on 67: no 43",
  );
  const arm = client({ vendor: "PXEClient:Arch:00011:UNDI:003000", arch: [11] });
  t.equal(pxeVendorOptionsFor(arm, 67), undefined, "ARM64 UEFI on 67: no 43");
  const http = client({ vendor: "HTTPClient:Arch:00016:UNDI:003000", arch: [16] });
  t.equal(pxeVendorOptionsFor(http, 67), undefined, "HTTP boot: no 43");
  t.equal(pxeVendorOptionsFor(bios({ ipxe: true }), 67), undefined, "iPXE: no 43");
  t.equal(pxeVendorOptionsFor(bios({ type: 3 }), 4011), undefined, "4011 without boot item: no 43");

  // PXE 2.1: a boot server request carries 43.71 (type, layer); the ACK echoes it.
  const withItem = bios({ type: 3, extra: opt(43, [71, 4, 0x80, 0x00, 0x00, 0x00, 255]) });
  const ack = decide(withItem, 4011)!;
  const echoed = readPxeVendorOptions(ack.reply.options);
  t.same(echoed?.bootItem, { type: 0x8000, layer: 0 }, "4011: boot item echoed");
  t.equal(echoed?.discoveryControl, undefined);
  // The encoded 43 must end with the PXE end sub-option.
  const raw = ack.reply.options.get(43)!;
  t.equal(raw[raw.length - 1], 255);
  t.same(decodePxeVendorOptions(raw)?.bootItem, { type: 0x8000, layer: 0 });

  // iPXE doing boot server discovery drops an ACK without the matching item.
  const ipxeItem = bios({
    type: 3,
    ipxe: true,
    extra: opt(43, [71, 4, 0x80, 0x00, 0x00, 0x00, 255]),
  });
  t.same(
    pxeVendorOptionsFor(ipxeItem, 4011),
    { bootItem: { type: 0x8000, layer: 0 } },
    "iPXE on 4011: item echoed",
  );
});

t.test("boot file by architecture", async (t) => {
  const files = {
    bios: "undionly.kpxe",
    uefiX64: "x64/snponly.efi",
    uefiArm64: "arm64/snponly.efi",
    httpBootUrl: "http://10.99.0.1/ipxe.efi",
  };
  const c = { ...ctx, bootFiles: files };
  t.equal(bootFileFor(bios(), c), "undionly.kpxe");
  t.equal(bootFileFor(uefi(), c), "x64/snponly.efi");
  t.equal(bootFileFor(uefi({ arch: [9] }), c), "x64/snponly.efi");
  const arm = client({ vendor: "PXEClient:Arch:00011:UNDI:003000", arch: [11] });
  t.equal(bootFileFor(arm, c), "arm64/snponly.efi");
  t.equal(decide(arm, 67), null, "ARM64 without a configured file is ignored");
  t.equal(decide(arm, 67, c)?.reply.file, "arm64/snponly.efi");
  const http = client({ vendor: "HTTPClient:Arch:00016:UNDI:003000", arch: [16] });
  t.equal(bootFileFor(http, c), "http://10.99.0.1/ipxe.efi");
  t.equal(decide(http, 67), null, "HTTP boot without a URL is ignored");
  const ia32 = client({ vendor: "PXEClient:Arch:00006:UNDI:003000", arch: [6] });
  t.equal(decide(ia32, 67, c), null, "IA32 EFI: nothing to give");
  t.equal(
    bootFileFor(client({ vendor: "PXEClient:Arch:00007:UNDI:003000" }), c),
    "x64/snponly.efi",
    "no option 93: architecture from the vendor class",
  );
  t.equal(bootFileFor(client({ vendor: "PXEClient" }), c), "undionly.kpxe", "PXE 2.0 ROM: BIOS");
});

t.test("already-iPXE clients get their script URL", async (t) => {
  for (const [name, c] of [
    ["option 175", uefi({ ipxe: true })],
    ["user class iPXE", bios({ userClass: "iPXE" })],
  ] as const) {
    t.ok(c.isIpxe, `${name} detected`);
    const d = decide(c, 67)!;
    t.equal(d.reply.file, `http://10.99.0.1/boot/${MAC_STR}.ipxe`, `${name}: script URL`);
  }
  t.notOk(bios({ userClass: "iPXE-other" }).isIpxe, "user class must be exactly iPXE");
});

t.test(
  "noBootFile: PXE firmware is told to boot locally, iPXE and HTTP boot get silence",
  async (t) => {
    const c = { ...ctx, noBootFile: true };
    t.equal(decide(bios({ ipxe: true }), 67, c), null, "iPXE: silence");
    t.equal(decide(uefi({ type: 3, ipxe: true }), 4011, c), null, "iPXE on 4011: silence");
    const http = client({ vendor: "HTTPClient:Arch:00016:UNDI:003000", arch: [16] });
    t.equal(decide(http, 67, c), null, "HTTP boot: silence");
    const out = evaluateProxy({ client: bios({ ipxe: true }), port: 67, source: src }, c);
    t.match(out, { action: "ignore", reason: /must not netboot/ });

    const isLocalMenu = (o: Map<number, Buffer>, what: string) => {
      const v = readPxeVendorOptions(o);
      t.same(
        v?.bootMenu?.map((m) => m.type),
        [0],
        `${what}: the only menu item is type 0, local boot`,
      );
      t.equal(v?.menuPrompt?.timeout, 0, `${what}: no prompt delay`);
      t.equal((v?.discoveryControl ?? 0) & 8, 0, `${what}: not "use the boot file in this packet"`);
    };
    const biosOffer = decide(bios(), 67, c)!;
    t.equal(biosOffer.reply.file, "", "BIOS: no boot file");
    t.notOk(biosOffer.reply.options.has(Opt.bootfileName));
    isLocalMenu(biosOffer.reply.options, "BIOS on 67");
    const uefiOffer = decide(uefi({ prl: [67] }), 67, c)!;
    t.equal(uefiOffer.reply.file, "", "UEFI: no boot file");
    t.notOk(uefiOffer.reply.options.has(Opt.bootfileName), "no empty option 67 even when asked");
    t.notOk(uefiOffer.reply.options.has(43), "UEFI on 67: no 43, so it asks on 4011");
    const uefiAck = decide(uefi({ type: 3 }), 4011, c)!;
    t.equal(readMessageType(uefiAck.reply.options), 5);
    t.equal(uefiAck.reply.file, "");
    isLocalMenu(uefiAck.reply.options, "UEFI on 4011");
    const ia32 = client({ vendor: "PXEClient:Arch:00006:UNDI:003000", arch: [6], type: 3 });
    isLocalMenu(
      decide(ia32, 4011, c)!.reply.options,
      "an architecture with no boot file configured",
    );
  },
);

t.test("destination", async (t) => {
  t.same(decide(bios(), 67)!.destination, {
    address: "255.255.255.255",
    port: 68,
    broadcast: true,
  });
  t.same(decide(bios({ type: 3 }), 4011)!.destination, {
    address: "10.99.0.77",
    port: 4011,
    broadcast: false,
  });
  const relayed = decide(bios({ giaddr: [10, 1, 2, 1] }), 67)!;
  t.same(relayed.destination, { address: "10.1.2.1", port: 67, broadcast: false });
  t.equal(relayed.reply.giaddr, "10.1.2.1", "giaddr kept for the relay");
  const relayed4011 = decide(bios({ type: 3, giaddr: [10, 1, 2, 1] }), 4011)!;
  t.same(relayed4011.destination, { address: "10.1.2.1", port: 67, broadcast: false });
});

t.test("a bad server address means silence, not a throw", async (t) => {
  t.equal(decide(bios(), 67, { ...ctx, serverAddress: "not-an-ip" }), null);
  t.equal(decide(bios(), 67, { ...ctx, serverAddress: "0.0.0.0" }), null);
});
