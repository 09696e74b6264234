// Decoding and answering packets captured from real firmware (test/fixtures/dhcp/README.md).
// Expected values come from how QEMU was started (MAC, -uuid), from the firmware's own
// documented behaviour (architecture, vendor class) and from what dnsmasq sent.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { classifyClient } from "../../../src/netboot/dhcp/client.js";
import {
  IpxeSub,
  Opt,
  readClientNdi,
  readMessageType,
  readPxeVendorOptions,
} from "../../../src/netboot/dhcp/options.js";
import {
  type DhcpPacket,
  decodeDhcp,
  encodeDhcp,
  macOf,
} from "../../../src/netboot/dhcp/packet.js";
import { decideProxyReply, type ProxyContext } from "../../../src/netboot/dhcp/proxy.js";

const FIXTURES = join(import.meta.dirname, "../../fixtures/dhcp");

function load(name: string): Buffer {
  return Buffer.from(readFileSync(join(FIXTURES, `${name}.hex`), "utf8").trim(), "hex");
}

function packet(name: string): DhcpPacket {
  const r = decodeDhcp(load(name));
  if (!r.ok) throw new Error(`${name}: ${r.error}`);
  return r.packet;
}

const BIOS_MAC = "52:54:00:bf:00:01";
const UEFI_MAC = "52:54:00:bf:00:02";
const QEMU_UUID = "00112233-4455-6677-8899-aabbccddeeff";

interface Expect {
  name: string;
  mac: string;
  type: number;
  vendor: string;
  arch: number;
  ipxe: boolean;
  ciaddr?: string;
}

const clients: Expect[] = [
  {
    name: "ipxe-rom-e1000-discover",
    mac: BIOS_MAC,
    type: 1,
    vendor: "PXEClient:Arch:00000:UNDI:002001",
    arch: 0,
    ipxe: true,
  },
  {
    name: "ipxe-rom-e1000-request",
    mac: BIOS_MAC,
    type: 3,
    vendor: "PXEClient:Arch:00000:UNDI:002001",
    arch: 0,
    ipxe: true,
  },
  {
    name: "ipxe-rom-e1000-request-4011",
    mac: BIOS_MAC,
    type: 3,
    vendor: "PXEClient",
    arch: 0,
    ipxe: true,
  },
  {
    name: "ipxe-undionly-discover",
    mac: BIOS_MAC,
    type: 1,
    vendor: "PXEClient",
    arch: 0,
    ipxe: true,
  },
  {
    name: "ipxe-undionly-request-4011",
    mac: BIOS_MAC,
    type: 3,
    vendor: "PXEClient",
    arch: 0,
    ipxe: true,
    ciaddr: "10.99.0.90",
  },
  {
    name: "ovmf-pxe-discover",
    mac: UEFI_MAC,
    type: 1,
    vendor: "PXEClient:Arch:00007:UNDI:003000",
    arch: 7,
    ipxe: false,
  },
  {
    name: "ovmf-pxe-request",
    mac: UEFI_MAC,
    type: 3,
    vendor: "PXEClient:Arch:00007:UNDI:003000",
    arch: 7,
    ipxe: false,
  },
  {
    name: "ovmf-pxe-request-4011",
    mac: UEFI_MAC,
    type: 3,
    vendor: "PXEClient:Arch:00007:UNDI:003000",
    arch: 7,
    ipxe: false,
    ciaddr: "10.99.0.91",
  },
  {
    name: "ipxe-snponly-discover",
    mac: UEFI_MAC,
    type: 1,
    vendor: "PXEClient:Arch:00007:UNDI:003010",
    arch: 7,
    ipxe: true,
  },
  {
    name: "ipxe-snponly-request",
    mac: UEFI_MAC,
    type: 3,
    vendor: "PXEClient:Arch:00007:UNDI:003010",
    arch: 7,
    ipxe: true,
  },
  {
    name: "ipxe-snponly-request-4011",
    mac: UEFI_MAC,
    type: 3,
    vendor: "PXEClient:Arch:00007:UNDI:003010",
    arch: 7,
    ipxe: true,
    ciaddr: "10.99.0.91",
  },
  {
    name: "ovmf-http-discover",
    mac: UEFI_MAC,
    type: 1,
    vendor: "HTTPClient:Arch:00016:UNDI:003000",
    arch: 16,
    ipxe: false,
  },
];

t.test("client packets decode to what the firmware was and sent", async (t) => {
  for (const e of clients) {
    const p = packet(e.name);
    const c = classifyClient(p);
    t.equal(c.mac, e.mac, `${e.name}: MAC given to QEMU`);
    t.equal(macOf(p), e.mac);
    t.equal(c.messageTypeCode, e.type, `${e.name}: message type`);
    t.equal(c.vendorClass, e.vendor, `${e.name}: vendor class`);
    t.equal(c.arch, e.arch, `${e.name}: architecture`);
    t.equal(c.isIpxe, e.ipxe, `${e.name}: iPXE or not`);
    t.equal(c.uuid, QEMU_UUID, `${e.name}: UUID given to QEMU`);
    t.equal(c.isPxe, !e.name.includes("http"), `${e.name}: PXEClient`);
    t.equal(c.isHttpBoot, e.name.includes("http"), `${e.name}: HTTP boot`);
    t.equal(c.isRequest, true);
    if (e.ciaddr) t.equal(c.ciaddr, e.ciaddr, `${e.name}: ciaddr is the leased address`);
    if (e.ipxe) {
      t.equal(c.userClass, "iPXE", `${e.name}: iPXE's raw user class`);
      t.ok(c.ipxe?.features.has(IpxeSub.http), `${e.name}: iPXE says it can do HTTP`);
      t.match(c.ipxe?.version, /^1\.\d+\.\d+$/, `${e.name}: iPXE version 1.x`);
    } else {
      t.equal(c.ipxe, undefined);
    }
  }
  // PXE 2.1 UNDI 2.1 in the BIOS ROM's NDI, 3.0 in EDK2's (matching their option 60 text).
  t.same(readClientNdi(packet("ipxe-rom-e1000-discover").options), { type: 1, major: 2, minor: 1 });
  t.same(readClientNdi(packet("ovmf-pxe-discover").options), { type: 1, major: 3, minor: 0 });
  // The ROM asked the boot server for the item dnsmasq's menu offered.
  t.same(readPxeVendorOptions(packet("ipxe-rom-e1000-request-4011").options)?.bootItem, {
    type: 0x8000,
    layer: 0,
  });
});

t.test("server packets from dnsmasq decode as dnsmasq meant them", async (t) => {
  const offer = packet("dnsmasq-offer-address");
  t.equal(offer.op, 2);
  t.equal(readMessageType(offer.options), 2);
  t.match(offer.yiaddr, /^10\.99\.0\.(5\d|[6-9]\d)$/, "an address from the dhcp-range");
  t.equal(classifyClient(offer).isRequest, false);

  const bios = readPxeVendorOptions(packet("dnsmasq-proxy-offer-bios").options);
  t.equal(bios?.discoveryControl, 3, "dnsmasq: broadcast and multicast discovery off");
  t.same(bios?.bootServers, [{ type: 0x8000, addresses: ["10.99.0.2"] }]);
  t.same(bios?.bootMenu, [{ type: 0x8000, description: "bios" }]);
  t.same(bios?.menuPrompt, { timeout: 0, prompt: "PXE" });

  const ack = packet("dnsmasq-proxy-ack-4011-bios");
  t.equal(ack.file, "undionly.0", "the x86PC basename with dnsmasq's .0");
  t.equal(ack.siaddr, "10.99.0.2");
  t.same(readPxeVendorOptions(ack.options)?.bootItem, { type: 0x8000, layer: 0 });

  const uefi = packet("dnsmasq-proxy-offer-uefi");
  t.notOk(uefi.options.has(Opt.vendorSpecific), "dnsmasq leaves 43 out for UEFI too");
  t.equal(uefi.yiaddr, "0.0.0.0");
});

const ctx: ProxyContext = {
  serverAddress: "10.99.0.1",
  bootFiles: {
    bios: "undionly.kpxe",
    uefiX64: "snponly.efi",
    httpBootUrl: "http://10.99.0.1/ipxe/ipxe.efi",
  },
  ipxeScriptUrl: (mac) => `http://10.99.0.1/boot/${mac}`,
};

function decide(name: string, port: 67 | 4011, source = { address: "0.0.0.0", port: 68 }, c = ctx) {
  return decideProxyReply({ client: classifyClient(packet(name)), port, source }, c);
}

t.test("the proxy decision on real requests", async (t) => {
  const offer = decide("ovmf-pxe-discover", 67);
  t.ok(offer, "OVMF DISCOVER answered");
  t.equal(readMessageType(offer!.reply.options), 2);
  t.equal(offer!.reply.file, "snponly.efi");
  t.notOk(offer!.reply.options.has(Opt.vendorSpecific), "no 43, so OVMF asks on 4011");
  t.same(offer!.destination, { address: "255.255.255.255", port: 68, broadcast: true });
  // dnsmasq, a proxy OVMF accepted, sent 53, 54, 60 and 97: ours carries at least those.
  const dnsmasqCodes = [...packet("dnsmasq-proxy-offer-uefi").options.keys()];
  for (const code of dnsmasqCodes)
    t.ok(offer!.reply.options.has(code), `has option ${code} like dnsmasq`);
  t.same(
    offer!.reply.options.get(Opt.clientUuid),
    packet("ovmf-pxe-discover").options.get(Opt.clientUuid),
  );

  t.equal(decide("ovmf-pxe-request", 67), null, "OVMF's REQUEST for its lease is not ours");
  t.equal(decide("ipxe-rom-e1000-request", 67), null);

  // OVMF sends its proxy request from port 4011; dnsmasq answered to 10.99.0.91:4011.
  const ack = decide("ovmf-pxe-request-4011", 4011, { address: "10.99.0.91", port: 4011 });
  t.equal(readMessageType(ack!.reply.options), 5);
  t.equal(ack!.reply.file, "snponly.efi");
  t.equal(ack!.reply.xid, packet("ovmf-pxe-request-4011").xid);
  t.same(ack!.destination, { address: "10.99.0.91", port: 4011, broadcast: false });

  for (const [name, mac] of [
    ["ipxe-rom-e1000-discover", BIOS_MAC],
    ["ipxe-undionly-discover", BIOS_MAC],
    ["ipxe-snponly-discover", UEFI_MAC],
  ] as const) {
    const d = decide(name, 67);
    t.equal(
      d?.reply.file,
      `http://10.99.0.1/boot/${mac}`,
      `${name}: script URL, no chainload loop`,
    );
    t.notOk(d?.reply.options.has(Opt.vendorSpecific), `${name}: no 43`);
  }
  const ipxe4011 = decide("ipxe-snponly-request-4011", 4011, { address: "10.99.0.91", port: 68 });
  t.equal(ipxe4011?.reply.file, `http://10.99.0.1/boot/${UEFI_MAC}`);
  t.same(ipxe4011?.destination, { address: "10.99.0.91", port: 68, broadcast: false });

  const romBs = decide("ipxe-rom-e1000-request-4011", 4011, { address: "10.99.0.90", port: 68 });
  t.same(
    readPxeVendorOptions(romBs!.reply.options)?.bootItem,
    { type: 0x8000, layer: 0 },
    "item echoed",
  );

  const http = decide("ovmf-http-discover", 67);
  t.equal(http?.reply.options.get(Opt.vendorClass)?.toString(), "HTTPClient");
  t.equal(http?.reply.file, "http://10.99.0.1/ipxe/ipxe.efi");
  const noUrl = { ...ctx, bootFiles: { bios: "undionly.kpxe", uefiX64: "snponly.efi" } };
  t.equal(decide("ovmf-http-discover", 67, undefined, noUrl), null, "no URL configured: silent");

  // noBootFile: OVMF cancelled PXE at once on dnsmasq's local-boot ACK; ours must say the same.
  const local = decide(
    "ovmf-pxe-request-4011",
    4011,
    { address: "10.99.0.91", port: 4011 },
    {
      ...ctx,
      noBootFile: true,
    },
  );
  const theirs = readPxeVendorOptions(packet("dnsmasq-proxy-ack-4011-local").options);
  const ours = readPxeVendorOptions(local!.reply.options);
  t.same(
    theirs?.bootMenu?.map((m) => m.type),
    [0],
    "dnsmasq's local-boot menu: one type-0 item",
  );
  t.same(
    ours?.bootMenu?.map((m) => m.type),
    theirs?.bootMenu?.map((m) => m.type),
  );
  t.equal(ours?.discoveryControl, theirs?.discoveryControl);
  t.equal(ours?.menuPrompt?.timeout, theirs?.menuPrompt?.timeout);
  t.equal(
    local!.reply.file,
    packet("dnsmasq-proxy-ack-4011-local").file,
    "no boot file, like dnsmasq",
  );
  t.equal(decide("ipxe-snponly-discover", 67, undefined, { ...ctx, noBootFile: true }), null);

  for (const server of [
    "dnsmasq-offer-address",
    "dnsmasq-proxy-offer-bios",
    "dnsmasq-proxy-ack-4011-bios",
    "dnsmasq-proxy-ack-4011-local",
  ]) {
    t.equal(decide(server, 67), null, `${server}: a server's packet is never answered`);
  }
  for (const c of clients) {
    const d67 = decide(c.name, 67);
    if (d67) {
      t.equal(d67.reply.yiaddr, "0.0.0.0", `${c.name}: never an address`);
      t.ok(decodeDhcp(encodeDhcp(d67.reply)).ok, `${c.name}: reply survives the wire`);
    }
  }
});
