import t from "tap";
import { checkPeer, parseSubnet } from "../../src/netboot/peer-binding.js";
import type { Machine } from "../../src/store/machines.js";

const MAC = "52:54:00:bf:10:01";
const machine = (ip: string | null) => ({ mac_address: MAC, ip_address: ip }) as Machine;

t.test("on the link: the neighbour table's MAC must be the machine's", async (t) => {
  const deps = (seen: string | undefined) => ({
    macForIp: async () => seen,
    routedSubnets: [parseSubnet("10.20.0.0/24")],
  });
  t.same(await checkPeer(deps(MAC), MAC, "10.99.0.50", machine(null)), { ok: true, via: "link" });
  const other = await checkPeer(deps("52:54:00:66:66:66"), MAC, "10.99.0.50", machine(null));
  t.same(other, { ok: false, reason: "the peer 10.99.0.50 is 52:54:00:66:66:66, not the machine" });
  t.equal(
    (await checkPeer(deps("52:54:00:66:66:66"), MAC, "10.20.0.50", machine("10.20.0.50"))).ok,
    false,
    "a neighbour entry with another MAC is refused even at the fixed address",
  );
});

t.test("routed: an allowed subnet and the machine's fixed address", async (t) => {
  const deps = { macForIp: async () => undefined, routedSubnets: [parseSubnet("10.20.0.0/24")] };
  t.same(await checkPeer(deps, MAC, "10.20.0.50", machine("10.20.0.50")), {
    ok: true,
    via: "routed",
  });
  t.match(await checkPeer(deps, MAC, "10.20.0.51", machine("10.20.0.50")), {
    ok: false,
    reason: /not the machine's fixed address/,
  });
  t.match(await checkPeer(deps, MAC, "10.20.0.50", machine(null)), {
    ok: false,
    reason: /needs the machine's fixed address/,
  });
  t.match(await checkPeer(deps, MAC, "10.30.0.50", machine("10.30.0.50")), {
    ok: false,
    reason: /not allowed routed boot/,
  });
  t.match(await checkPeer(deps, MAC, "127.0.0.1", undefined), { ok: false });
  t.match(await checkPeer(deps, MAC, "::1", undefined), { ok: false }, "IPv6 has no ARP entry");
});

t.test("subnets", async (t) => {
  const s = parseSubnet("10.20.0.0/22");
  t.ok(s.contains("10.20.3.255"));
  t.notOk(s.contains("10.20.4.0"));
  t.notOk(s.contains("not an address"));
  t.ok(parseSubnet("0.0.0.0/0").contains("192.0.2.1"));
  t.ok(parseSubnet("192.0.2.7/32").contains("192.0.2.7"));
  t.throws(() => parseSubnet("10.20.0.1/24"), /host bits set \(the subnet is 10\.20\.0\.0\/24\)/);
  t.throws(() => parseSubnet("10.20.0.0"), /not an IPv4 subnet/);
  t.throws(() => parseSubnet("10.20.0.0/33"), /not an IPv4 subnet/);
});
