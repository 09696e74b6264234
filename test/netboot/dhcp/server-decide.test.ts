// The proxy-DHCP server's decision for one datagram (classify, ask the policy, answer),
// fed packets captured from real firmware (test/fixtures/dhcp/README.md). proxy.test.ts
// proves the pure answer; this proves the server lets each kind of boot client reach it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { Opt, readParamRequestList } from "../../../src/netboot/dhcp/options.js";
import { type DhcpPacket, decodeDhcp } from "../../../src/netboot/dhcp/packet.js";
import {
  type ClientPolicy,
  decide,
  type ProxyRequestInfo,
} from "../../../src/netboot/dhcp/server.js";

const FIXTURES = join(import.meta.dirname, "../../fixtures/dhcp");

function packet(name: string): DhcpPacket {
  const hex = readFileSync(join(FIXTURES, `${name}.hex`), "utf8").trim();
  const r = decodeDhcp(Buffer.from(hex, "hex"));
  if (!r.ok) throw new Error(`${name}: ${r.error}`);
  return r.packet;
}

const HTTP_URL = "http://10.99.0.1:80/boot/ipxe/snponly.efi";

function server(policy: Partial<ClientPolicy> = {}, ownMacs: string[] = []) {
  const asked: ProxyRequestInfo[] = [];
  const opts = {
    isOwnMac: (mac: string) => ownMacs.includes(mac),
    bootFiles: { bios: "undionly.kpxe", uefiX64: "snponly.efi", httpBootUrl: HTTP_URL },
    policy: (req: ProxyRequestInfo): ClientPolicy => {
      asked.push(req);
      return { noBootFile: false, scriptUrl: () => "http://10.99.0.1/boot/script", ...policy };
    },
  };
  const datagram = { ifname: "br0", dstPort: 67, srcAddress: "0.0.0.0", srcPort: 68 };
  return {
    asked,
    decide: (name: string) =>
      decide(opts, { ...datagram, localAddress: "10.99.0.1" }, packet(name), "10.99.0.1"),
  };
}

t.test("OVMF's HTTP boot DISCOVER gets the URL of iPXE's EFI binary", async (t) => {
  const s = server();
  const d = s.decide("ovmf-http-discover");
  if (d.action !== "reply") throw new Error(`ignored: ${JSON.stringify(d)}`);
  t.equal(s.asked.length, 1, "the daemon's policy was asked (the machine is seen)");
  t.equal(s.asked[0]?.client.mac, "52:54:00:bf:00:02");
  const reply = d.outcome.reply;
  t.equal(reply.options.get(Opt.messageType)?.[0], 2, "an OFFER");
  t.equal(reply.options.get(Opt.vendorClass)?.toString(), "HTTPClient", "vendor class echoed");
  // EDK2's HttpBootDxe reads the URI from option 67, which its DISCOVER asks for.
  t.ok(readParamRequestList(packet("ovmf-http-discover").options)?.includes(Opt.bootfileName));
  t.equal(reply.options.get(Opt.bootfileName)?.toString(), HTTP_URL, "option 67: the URL");
  t.equal(reply.yiaddr, "0.0.0.0", "a proxy offer: no address");
  t.notOk(reply.options.has(Opt.vendorSpecific), "no PXE menu for HTTP boot");
  t.same(d.outcome.destination, { address: "255.255.255.255", port: 68, broadcast: true });
});

t.test("a machine that must not netboot leaves HTTP boot to fall through", async (t) => {
  const d = server({ noBootFile: true }).decide("ovmf-http-discover");
  t.equal(d.action, "ignore");
  t.match(d.action === "ignore" ? d.reason : "", /must not netboot/);
});

t.test("PXE firmware still reaches the decision, and other traffic does not", async (t) => {
  const s = server();
  t.equal(s.decide("ovmf-pxe-discover").action, "reply", "OVMF PXE");
  t.equal(s.decide("ipxe-rom-e1000-discover").action, "reply", "iPXE ROM");
  t.same(s.decide("dnsmasq-offer-address"), { action: "ignore" }, "a server's reply");
  t.equal(s.asked.length, 2, "the policy is asked for boot clients only");
});

t.test(
  "a request naming the server's own MAC is not a PC: neither seen nor answered",
  async (t) => {
    // bootfleet doctor sends its PXE DISCOVER from the boot interface's own MAC.
    const s = server({}, ["52:54:00:bf:00:02"]);
    const d = s.decide("ovmf-http-discover");
    t.equal(d.action, "ignore");
    t.match(d.action === "ignore" ? d.reason : "", /this server's own MAC/);
    t.equal(s.asked.length, 0, "the policy (which records a machine as seen) was not asked");
    t.equal(s.decide("ipxe-rom-e1000-discover").action, "reply", "another MAC is answered");
  },
);
