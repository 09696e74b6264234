import { execFile } from "node:child_process";
import { join } from "node:path";
import Database from "better-sqlite3";
import t from "tap";
import type { CheckResult } from "../../src/cli/check.js";
import { checkRogueProxyDhcp, judgeOffers } from "../../src/cli/doctor-dhcp.js";
import { REPO, startDaemon, tempDir } from "../helpers/daemon.js";
import { TestLan } from "../helpers/lan.js";

const rootSkip =
  process.getuid?.() === 0 ? false : "needs root: network namespaces, raw sockets and dnsmasq";
const PROBE_MS = 1500;

/** Runs the check in another namespace (a host of the LAN) and returns its result. */
function checkIn(host: string, ifname: string): Promise<CheckResult> {
  const code = `
    const { checkRogueProxyDhcp } = await import(${JSON.stringify(join(REPO, "src/cli/doctor-dhcp.ts"))});
    process.stdout.write(JSON.stringify(await checkRogueProxyDhcp(${JSON.stringify(ifname)}, { listenMs: ${PROBE_MS} })));
  `;
  return new Promise((resolve, reject) =>
    execFile(
      "ip",
      [
        "netns",
        "exec",
        host,
        process.execPath,
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        code,
      ],
      { cwd: REPO, timeout: 60_000, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout) as CheckResult);
      },
    ),
  );
}

/** Waits (bounded) until a dnsmasq started with --log-dhcp says it serves DHCP. */
async function dnsmasqReady(p: { logText: () => string; exitCode: number | null }) {
  for (let i = 0; i < 100; i++) {
    if (/DHCP, (proxy on subnet|IP range)/.test(p.logText())) return;
    if (p.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`dnsmasq did not start:\n${p.logText()}`);
}

async function stop(p: ReturnType<TestLan["spawn"]>) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once("exit", r));
  p.kill("SIGTERM");
  await gone;
}

/**
 * The doctor's PXE DISCOVER on a test LAN (never the real one): the doctor's host is a
 * namespace on the LAN's bridge, and dnsmasq in the LAN's namespace plays, in turn, the
 * site's DHCP server (addresses only: fine) and a rogue proxy-DHCP with a pxe-service
 * (fails, naming its address). With no server at all the check passes.
 */
t.test(
  "another proxy-DHCP on the segment: found, named, with the fix",
  { skip: rootSkip },
  async (t) => {
    const lan = TestLan.create(t, "bf-doc-dhcp", [
      { bridge: "br0", address: "10.97.0.1", dhcpRange: ["10.97.0.50", "10.97.0.99"] },
    ]);
    const doctorHost = lan.addHost("br0", "10.97.0.2");

    const none = await checkIn(doctorHost, "eth0");
    t.equal(none.status, "ok", `no server at all: ${none.detail}`);
    t.match(none.detail, /no other server answered/);

    const site = lan.startSiteDhcp(lan.subnets[0]!) as ReturnType<TestLan["spawn"]> & {
      logText: () => string;
    };
    await dnsmasqReady(site);
    const plain = await checkIn(doctorHost, "eth0");
    t.equal(plain.status, "ok", `a DHCP server with addresses only: ${plain.detail}`);
    // dnsmasq pings an address before offering it, which can outlast the probe: the offer
    // may come too late to be named, but the DISCOVER must have reached the server.
    t.match(
      site.logText(),
      /vendor class: PXEClient:Arch:00000/,
      "the doctor's PXE DISCOVER reached the LAN's server",
    );
    await stop(site);

    const rogue = lan.spawn("dnsmasq", [
      "--no-daemon",
      "--port=0",
      "--no-resolv",
      "--no-hosts",
      "--interface=br0",
      "--bind-interfaces",
      "--dhcp-range=10.97.0.0,proxy",
      '--pxe-service=x86PC,"Rogue network boot",pxelinux',
      `--dhcp-leasefile=${join(lan.dir, "rogue.leases")}`,
      `--pid-file=${join(lan.dir, "rogue.pid")}`,
      "--log-dhcp",
    ]) as ReturnType<TestLan["spawn"]> & { logText: () => string };
    await dnsmasqReady(rogue);
    const found = await checkIn(doctorHost, "eth0");
    t.equal(found.status, "fail", found.detail);
    t.match(found.detail, /10\.97\.0\.1 \(proxy-DHCP, /, "names the rogue server, as a proxy-DHCP");
    t.match(
      found.detail,
      /no boot file in its offer: a PXE boot menu/,
      "says whether it offers a boot file",
    );
    t.match(found.fix, /pxe-service/, "with the fix");
    t.comment(`rogue proxy-DHCP: ${found.detail}`);
    await stop(rogue);
  },
);

/**
 * The doctor on the boot server itself, while bootfleetd serves the segment: its DISCOVER
 * carries the server's own MAC, and the daemon must not take the server for a PC. The
 * daemon answers on a second address of br0 (server_address), as on a server with several
 * addresses there, so the transport's "our own source address" filter does not hide the
 * probe: what keeps the server out of its machine list is its MAC. A host of the LAN
 * probing the same way is the control: that one is recorded.
 */
t.test(
  "the doctor's probe from the server's own MAC is not a discovered machine",
  { skip: rootSkip },
  async (t) => {
    const lan = TestLan.create(t, "bf-doc-self", [{ bridge: "br0", address: "10.97.0.1" }]);
    lan.exec("ip", ["addr", "add", "10.97.0.3/24", "dev", "br0"]);
    const data = tempDir(t, "bf-doc-self-");
    const daemon = await startDaemon(t, {
      wrapper: lan.wrapper,
      env: {
        BOOTFLEET_DATA_DIR: data,
        BOOTFLEET_HTTP_LISTEN: "10.97.0.3:0",
        BOOTFLEET_DHCP_ENABLED: "true",
        BOOTFLEET_NETBOOT_INTERFACES: "br0",
        BOOTFLEET_NETBOOT_SERVER_ADDRESS: "10.97.0.3",
        BOOTFLEET_LOG_LEVEL: "debug",
      },
    });
    const hostMac = "52:54:00:bf:d0:c7";
    const host = lan.addHost("br0", "10.97.0.20", hostMac);
    // Read once the host's port is on the bridge: a bridge takes a port's MAC.
    const serverMac = lan.exec("cat", ["/sys/class/net/br0/address"]).trim();

    const self = await checkIn(lan.ns, "br0");
    t.equal(self.status, "ok", `the server's own bootfleetd is not a rival: ${self.detail}`);
    const ignored = await daemon.waitForLog(
      (l) => l.msg === "PXE request not answered" && l.mac === serverMac,
      30_000,
    );
    t.match(ignored.reason, /this server's own MAC/, "the daemon says why it did not answer");
    await checkIn(host, "eth0");
    await daemon.waitForLog((l) => l.msg === "machine discovered" && l.mac === hostMac, 30_000);

    const db = new Database(join(data, "bootfleet.db"), { readonly: true });
    t.teardown(() => db.close());
    const macs = (
      db.prepare("SELECT mac_address FROM machines").all() as { mac_address: string }[]
    ).map((m) => m.mac_address);
    t.same(macs, [hostMac], "the LAN's host is discovered, the server is not");
  },
);

t.test("cannot probe an interface that is not there: a warning that says why", async (t) => {
  const r = await checkRogueProxyDhcp("nosuch-if0", { listenMs: 10 });
  t.equal(r.status, "warn");
  t.match(r.detail, /nosuch-if0 does not exist or has no IPv4 address/);
});

t.test(
  "judging offers: a boot file or PXE options make a competitor, an address does not",
  async (t) => {
    const ok = judgeOffers(
      "eth0",
      [{ server: "10.0.0.1", offeredAddress: "10.0.0.60", pxe: false }],
      1500,
    );
    t.equal(ok.status, "ok");
    const bad = judgeOffers(
      "eth0",
      [
        {
          server: "10.0.0.1",
          offeredAddress: "10.0.0.60",
          pxe: false,
          bootFile: "pxelinux.0",
          nextServer: "10.0.0.9",
        },
        { server: "10.0.0.7", pxe: true },
      ],
      1500,
    );
    t.equal(bad.status, "fail");
    t.match(bad.detail, /2 boot servers/);
    t.match(
      bad.detail,
      /10\.0\.0\.1 \(DHCP server offering 10\.0\.0\.60, boot file "pxelinux\.0" from 10\.0\.0\.9\)/,
    );
    t.match(bad.detail, /10\.0\.0\.7 \(proxy-DHCP, no boot file in its offer: a PXE boot menu/);
  },
);
