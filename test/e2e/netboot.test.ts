import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { issueBootToken } from "../../src/netboot/script/token.js";
import { Store } from "../../src/store/index.js";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { type Subnet, TestLan } from "../helpers/lan.js";

// Real firmware against the built daemon, in a network namespace with dnsmasq as the
// site's DHCP server (addresses only) and bootfleetd in proxy mode beside it.
const skip =
  process.getuid?.() === 0 ? false : "needs root: network namespaces, tap devices and QEMU";
const BOOT_TIMEOUT = 150_000;

type Teardown = { teardown(fn: () => void | Promise<void>): void };

const ROOM: Subnet = {
  bridge: "br0",
  address: "10.99.0.1",
  dhcpRange: ["10.99.0.50", "10.99.0.99"],
};

/** One room: a LAN with the site's DHCP server on it, and a data folder for bootfleetd. */
function oneRoom(t: Teardown, name: string) {
  const lan = TestLan.create(t, name, [ROOM]);
  lan.startSiteDhcp(ROOM);
  return { lan, data: tempDir(t) };
}

/** The daemon's database, opened read-only beside it, closed in teardown. */
function readStore(t: Teardown, data: string): Store {
  const store = Store.open({
    path: join(data, "bootfleet.db"),
    busyTimeoutMs: 1000,
    readonly: true,
  });
  t.teardown(() => store.close());
  return store;
}

async function bootServer(
  t: Teardown,
  lan: TestLan,
  dataDir: string,
  env: Record<string, string> = {},
) {
  return startDaemon(t, {
    wrapper: lan.wrapper,
    env: {
      BOOTFLEET_DATA_DIR: dataDir,
      BOOTFLEET_HTTP_LISTEN: ":80",
      BOOTFLEET_TFTP_PORT: "69",
      BOOTFLEET_DHCP_ENABLED: "true",
      BOOTFLEET_NETBOOT_INTERFACES: lan.subnets.map((s) => s.bridge).join(","),
      BOOTFLEET_LOG_LEVEL: "debug",
      ...env,
    },
  });
}

/** A machine whose boot action is an admin's script that prints a marker. */
function addScriptedMachine(dataDir: string, name: string, mac: string, marker: string) {
  const store = Store.open({ path: join(dataDir, "bootfleet.db"), busyTimeoutMs: 1000 });
  try {
    store.machines.create({
      name,
      mac_address: mac,
      status: "active",
      boot_action: "custom",
      custom_script: `#!ipxe\necho ${marker}\nsleep 600\n`,
    });
  } finally {
    store.close();
  }
}

t.test(
  "BIOS client with the NIC's iPXE ROM reaches the script assigned to its MAC",
  { skip },
  async (t) => {
    const { lan, data } = oneRoom(t, "bf-e2e-bios");
    const mac = "52:54:00:bf:10:01";
    addScriptedMachine(data, "lab-pc-01", mac, "BOOTFLEET-SCRIPT-LAB-PC-01");
    const daemon = await bootServer(t, lan, data);
    const pc = lan.startBiosClient({ bridge: "br0", mac });
    t.teardown(() => pc.kill());
    await pc.waitFor(/BOOTFLEET-SCRIPT-LAB-PC-01/, BOOT_TIMEOUT);
    t.pass("the assigned script ran on the client");

    // The timeline of that boot: an offer, then the script, on one session.
    const store = readStore(t, data);
    const machine = store.machines.getByMac(mac)!;
    const session = store.sessions.current(machine.id);
    t.ok(session?.dhcp_offer_at, "DHCP offer stamped");
    t.ok(session?.script_served_at, "script served stamped");
    t.ok(Date.parse(session!.script_served_at!) >= Date.parse(session!.dhcp_offer_at!), "in order");
    t.match(session?.client_ip, /^10\.99\.0\.\d+$/);
    t.equal(machine.boot_count, 1);

    // Another host on the LAN presents a token for that MAC (as if sniffed from the
    // broadcast offer): refused, since the kernel knows another MAC at its address.
    const key = readFileSync(join(data, "boot-token.key"), "utf8").trim();
    const token = issueBootToken(Buffer.from(key, "base64url"), {
      mac,
      expiresAt: Date.now() + 60_000,
    });
    const url = `http://10.99.0.1/boot/${mac.replace(/:/g, "")}/${token}`;
    const intruder = lan.addHost("br0", "10.99.0.200");
    const refused = lan.execIn(intruder, "curl", [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-m",
      "5",
      url,
    ]);
    t.equal(refused, "403", "another host is refused the machine's script");
    const forged = lan.execIn(intruder, "curl", [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-m",
      "5",
      `http://10.99.0.1/boot/${mac.replace(/:/g, "")}/${"A".repeat(36)}`,
    ]);
    t.equal(forged, "403", "a forged token is refused");
    const logged = await daemon.waitForLog((l) => l.msg === "boot script refused", 5000);
    t.match(
      logged.reason,
      /10\.99\.0\.200 is [0-9a-f:]{17}, not the machine/,
      "refusals are logged with the reason",
    );
  },
);

t.test(
  "an unknown MAC is registered as discovered and gets the discovery script",
  { skip },
  async (t) => {
    const { lan, data } = oneRoom(t, "bf-e2e-disc");
    await bootServer(t, lan, data);
    const mac = "52:54:00:bf:10:99";
    const pc = lan.startBiosClient({ bridge: "br0", mac });
    t.teardown(() => pc.kill());
    await pc.waitFor(/52:54:00:bf:10:99[\s\S]*registered/i, BOOT_TIMEOUT);
    const store = readStore(t, data);
    const m = store.machines.getByMac(mac);
    t.equal(m?.status, "discovered");
    t.equal(m?.client_arch, 0, "architecture from option 93");
    t.ok(m?.first_seen && m?.last_seen);
  },
);

t.test(
  "UEFI client (OVMF's own PXE) gets snponly.efi over TFTP and comes back as iPXE",
  { skip },
  async (t) => {
    const { lan, data } = oneRoom(t, "bf-e2e-uefi");
    const mac = "52:54:00:bf:20:01";
    addScriptedMachine(data, "lab-pc-uefi", mac, "BOOTFLEET-SCRIPT-UEFI");
    const daemon = await bootServer(t, lan, data);
    const pc = lan.startUefiClient({ bridge: "br0", mac });
    t.teardown(() => pc.kill());
    await pc.waitFor(/BOOTFLEET-SCRIPT-UEFI/, BOOT_TIMEOUT);
    const tftp = daemon.logs.filter((l) => l.msg === "tftp transfer complete");
    t.ok(
      tftp.some((l) => l.file === "snponly.efi"),
      "snponly.efi went over TFTP",
    );
    const served = daemon.logs.filter((l) => l.msg === "boot script served");
    t.equal(served.length, 1, "one script, no chainload loop");
    const store = readStore(t, data);
    const session = store.sessions.current(store.machines.getByMac(mac)!.id);
    t.equal(session?.tftp_file, "snponly.efi");
    t.ok((session?.tftp_bytes ?? 0) > 100_000, `TFTP bytes ${session?.tftp_bytes}`);
    t.ok(session?.tftp_done_at && session.script_served_at);
  },
);

t.test(
  "two interfaces in two subnets: each client is sent its own subnet's server address",
  { skip },
  async (t) => {
    const lan = TestLan.create(t, "bf-e2e-2net", [
      { bridge: "br0", address: "10.99.0.1", dhcpRange: ["10.99.0.50", "10.99.0.99"] },
      { bridge: "br1", address: "10.98.0.1", dhcpRange: ["10.98.0.50", "10.98.0.99"] },
    ]);
    const data = tempDir(t);
    const store = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000 });
    // The script prints what the proxy-DHCP told iPXE: its boot file (the script URL) and
    // the next server, both of which must carry the address of the client's own subnet.
    for (const [name, mac] of [
      ["room-a-01", "52:54:00:bf:30:01"],
      ["room-b-01", "52:54:00:bf:30:02"],
    ] as const) {
      store.machines.create({
        name,
        mac_address: mac,
        status: "active",
        boot_action: "custom",
        custom_script: `#!ipxe\necho BF-${name} next=\${proxydhcp/next-server} END\nsleep 600\n`,
      });
    }
    store.close();
    for (const s of lan.subnets) lan.startSiteDhcp(s);
    await bootServer(t, lan, data);
    const a = lan.startBiosClient({ bridge: "br0", mac: "52:54:00:bf:30:01" });
    const b = lan.startBiosClient({ bridge: "br1", mac: "52:54:00:bf:30:02" });
    t.teardown(() => {
      a.kill();
      b.kill();
    });
    const [ma, mb] = await Promise.all([
      a.waitFor(/BF-room-a-01 next=(\S*) END/, BOOT_TIMEOUT),
      b.waitFor(/BF-room-b-01 next=(\S*) END/, BOOT_TIMEOUT),
    ]);
    // iPXE prints the boot file it was given; the script URL's start comes before the
    // 80-column wrap of the serial console.
    const fileA = a.serial().match(/Filename: (http:\/\/[0-9.]+:\d+\/boot\/)/)?.[1];
    const fileB = b.serial().match(/Filename: (http:\/\/[0-9.]+:\d+\/boot\/)/)?.[1];
    t.equal(ma[1], "10.99.0.1", "room A's next-server is br0's address");
    t.equal(fileA, "http://10.99.0.1:80/boot/", "and its script URL");
    t.equal(mb[1], "10.98.0.1", "room B's next-server is br1's address");
    t.equal(fileB, "http://10.98.0.1:80/boot/", "and its script URL");
  },
);

t.test(
  "a BIOS client chainloads undionly.kpxe over TFTP, then that iPXE reaches its script",
  { skip },
  async (t) => {
    const { lan, data } = oneRoom(t, "bf-e2e-chain");
    const mac = "52:54:00:bf:40:01";
    addScriptedMachine(data, "lab-pc-chain", mac, "BOOTFLEET-SCRIPT-CHAINED");
    // The NIC's own iPXE is answered as plain PXE firmware: PXE ROM -> TFTP -> iPXE -> script.
    const daemon = await bootServer(t, lan, data, { BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE: "true" });
    const pc = lan.startBiosClient({ bridge: "br0", mac });
    t.teardown(() => pc.kill());
    await pc.waitFor(/BOOTFLEET-SCRIPT-CHAINED/, BOOT_TIMEOUT);
    t.match(pc.serial(), /undionly\.kpxe\.\.\. ok/, "the firmware loaded undionly.kpxe");
    const transfers = daemon.logs.filter((l) => l.msg === "tftp transfer complete");
    t.same(
      transfers.map((l) => l.file),
      ["undionly.kpxe"],
      "one TFTP transfer of undionly.kpxe",
    );
    const served = daemon.logs.filter((l) => l.msg === "boot script served");
    t.equal(served.length, 1, "the chainloaded iPXE got its script once: no loop");
    const store = readStore(t, data);
    const session = store.sessions.current(store.machines.getByMac(mac)!.id);
    t.equal(session?.tftp_file, "undionly.kpxe");
    t.ok(
      session?.dhcp_offer_at && session.tftp_done_at && session.script_served_at,
      "every phase stamped",
    );
  },
);
