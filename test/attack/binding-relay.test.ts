import { execFileSync } from "node:child_process";
import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { REPO, startDaemon, tempDir } from "../helpers/daemon.js";
import { TestLan } from "../helpers/lan.js";
import type { Forge } from "./forge-dhcp.js";

// Clients behind a DHCP relay: the relay forwards their requests with giaddr set, and the
// proxy's answer must go back to the relay (giaddr, port 67). Their script fetch arrives
// through a router, so the neighbour table cannot say who they are: a script with anything
// of the machine's own is served only in a subnet the admin allowed routed boot
// ([netboot] routed_subnets) and only to the machine's fixed address. Real packets: a
// router namespace relays, a client namespace behind it fetches.
const skip = process.getuid?.() === 0 ? false : "needs root: network namespaces";
const SERVER = "10.99.0.1";

function inHost(host: string, cmd: string, args: string[]): string {
  return execFileSync("ip", ["netns", "exec", host, cmd, ...args], {
    encoding: "utf8",
    cwd: REPO,
    timeout: 60_000,
  });
}

t.test("routed boot through a relay, bound to the fixed address", { skip }, async (t) => {
  const lan = TestLan.create(t, "bf-atk-relay", [{ bridge: "br0", address: SERVER }]);
  const data = tempDir(t);

  // The router: on the server's LAN as 10.99.0.254, and the gateway of two client
  // subnets (10.20.0.0/24 allowed routed boot, 10.30.0.0/24 not) on a link to the client.
  const router = lan.addHost("br0", "10.99.0.254");
  const client = `${lan.ns}-c`.slice(0, 30);
  execFileSync("ip", ["netns", "add", client]);
  t.teardown(() => {
    try {
      execFileSync("ip", ["netns", "del", client], { stdio: "ignore" });
    } catch {
      // already gone
    }
  });
  inHost(router, "ip", [
    "link",
    "add",
    "eth1",
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    client,
  ]);
  for (const args of [
    ["addr", "add", "10.20.0.1/24", "dev", "eth1"],
    ["addr", "add", "10.30.0.1/24", "dev", "eth1"],
    ["link", "set", "eth1", "up"],
  ]) {
    inHost(router, "ip", args);
  }
  inHost(router, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
  for (const args of [
    ["link", "set", "lo", "up"],
    ["addr", "add", "10.20.0.50/24", "dev", "eth0"],
    ["addr", "add", "10.20.0.51/24", "dev", "eth0"],
    ["addr", "add", "10.20.0.52/24", "dev", "eth0"],
    ["addr", "add", "10.30.0.50/24", "dev", "eth0"],
    ["link", "set", "eth0", "up"],
    ["route", "add", "default", "via", "10.20.0.1"],
  ]) {
    inHost(client, "ip", args);
  }
  for (const net of ["10.20.0.0/24", "10.30.0.0/24"]) {
    lan.exec("ip", ["route", "add", net, "via", "10.99.0.254"]);
  }

  const machines = [
    { name: "far-pc-1", mac: "52:54:00:bf:70:01", ip: "10.20.0.50" },
    { name: "far-pc-2", mac: "52:54:00:bf:70:02", ip: null },
    { name: "far-pc-3", mac: "52:54:00:bf:70:03", ip: "10.30.0.50" },
  ];
  {
    const store = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000 });
    for (const m of machines) {
      store.machines.create({
        name: m.name,
        mac_address: m.mac,
        ip_address: m.ip,
        status: "active",
        boot_action: "custom",
        custom_script: `#!ipxe\necho SECRET-OF-${m.name}\n`,
      });
    }
    store.close();
  }
  await startDaemon(t, {
    wrapper: lan.wrapper,
    env: {
      BOOTFLEET_DATA_DIR: data,
      BOOTFLEET_HTTP_LISTEN: ":80",
      BOOTFLEET_TFTP_PORT: "0",
      BOOTFLEET_DHCP_ENABLED: "true",
      BOOTFLEET_NETBOOT_INTERFACES: "br0",
      BOOTFLEET_NETBOOT_ROUTED_SUBNETS: "10.20.0.0/24",
      BOOTFLEET_LOG_LEVEL: "debug",
    },
  });

  /** The relay forwards a client's DISCOVER; the answer must come back to giaddr:67. */
  const relayed = (mac: string, giaddr: string): string => {
    const f: Forge = {
      server: SERVER,
      port: 67,
      mac,
      giaddr,
      bind: { address: "0.0.0.0", port: 67 },
    };
    const out = inHost(router, process.execPath, [
      "--import",
      "tsx",
      join(REPO, "test/attack/forge-dhcp.ts"),
      JSON.stringify(f),
    ]);
    const file = (JSON.parse(out.trim().split("\n").at(-1)!) as { file: string | null }).file;
    if (!file) throw new Error(`no answer reached the relay for ${mac}`);
    return file;
  };
  const fetchFrom = (source: string, url: string) => {
    const out = inHost(client, "curl", [
      "-s",
      "-m",
      "30",
      "--interface",
      source,
      "-w",
      "\n%{http_code}",
      url,
    ]);
    const at = out.lastIndexOf("\n");
    return { status: out.slice(at + 1).trim(), body: out.slice(0, at) };
  };

  const [one, two, three] = machines as [
    (typeof machines)[0],
    (typeof machines)[0],
    (typeof machines)[0],
  ];
  const url1 = relayed(one.mac, "10.20.0.1");
  t.match(url1, new RegExp(`^http://${SERVER}:80/boot/`), "the relay got the answer (giaddr:67)");
  const served = fetchFrom("10.20.0.50", url1);
  t.equal(served.status, "200", "the machine at its fixed address gets its script");
  t.match(served.body, /SECRET-OF-far-pc-1/);

  const other = fetchFrom("10.20.0.51", relayed(one.mac, "10.20.0.1"));
  t.equal(other.status, "403", "another address of the allowed subnet is refused");
  t.notMatch(other.body, /SECRET/);
  t.equal(
    fetchFrom("10.20.0.52", relayed(two.mac, "10.20.0.1")).status,
    "403",
    "a machine without a fixed address gets nothing routed",
  );
  t.equal(
    fetchFrom("10.30.0.50", relayed(three.mac, "10.30.0.1")).status,
    "403",
    "a subnet not allowed routed boot gets nothing, fixed address or not",
  );
});
