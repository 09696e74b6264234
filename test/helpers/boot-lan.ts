import { mkdirSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Store } from "../../src/store/index.js";
import { mountLoopFs } from "../iscsi/overlay/loopfs.js";
import { type RunningDaemon, startDaemon, tempDir } from "./daemon.js";
import { TestLan } from "./lan.js";

type Teardown = { teardown(fn: () => void | Promise<void>): void };

// test/fixtures/boot/boot-sector.asm assembled (as in sanboot.test.ts): reads LBA 3 of
// its boot disk, prints DISKLESS-BOOT-OK, writes LBA 3, prints DISKLESS-WRITE-OK.
const BOOT_CODE =
  "fa31c08ed88ec08ed0bc007cfb8816687cb80102b9040030f68a16687cbb0080cd13722dbe697c803e0080577503be827ce82500b80103b9040030f68a16687cbbc47ccd13720abe9a7ce80c00faf4ebfcbeae7ce80200ebf4ac08c07409b40ebb0700cd10ebf2c3004449534b4c4553532d424f4f542d4f4b2046524553480d0a004449534b4c4553532d424f4f542d4f4b205345454e0d0a004449534b4c4553532d57524954452d4f4b0d0a004449534b4c4553532d4449534b2d4552524f520d0a005752495454454e2d42592d424f4f54";
const PREFIX = "iqn.2024-01.io.bootfleet";

/** The serial markers of a boot of the test boot sector that read and wrote its disk. */
export const BOOT_SECTOR_OK = /DISKLESS-BOOT-OK[\s\S]*DISKLESS-WRITE-OK/;

export interface BootLan {
  lan: TestLan;
  daemon: RunningDaemon;
  /** The daemon's address on the LAN (HTTP on port 80 there). */
  server: string;
  machineId: number;
  mac: string;
  adminPassword: string;
}

/**
 * A LAN in a namespace ready for one BIOS PC to sanboot the test boot sector (512 bytes,
 * so the boot is quick): a golden image of it on loop-mounted XFS, the machine and its
 * target in the store, the site's DHCP server (addresses only), tgtd, and the daemon with
 * proxy-DHCP, TFTP and HTTP on port 80. Everything is removed in teardown.
 */
export async function startBootLan(
  t: Teardown,
  opts: { name: string; subnet: string; mac: string; machineName: string },
): Promise<BootLan> {
  const server = `${opts.subnet}.1`;
  const lan = TestLan.create(t, opts.name, [
    { bridge: "br0", address: server, dhcpRange: [`${opts.subnet}.50`, `${opts.subnet}.99`] },
  ]);
  const fs = await mountLoopFs("xfs-reflink", 2 * 1024 ** 3, opts.name);
  t.teardown(() => fs.cleanup());
  const data = fs.dir;
  const confDir = tempDir(t, "bf-tgt-conf-");

  mkdirSync(join(data, "images"), { recursive: true });
  const golden = join(data, "images", "golden.raw");
  const sector = Buffer.alloc(512);
  Buffer.from(BOOT_CODE, "hex").copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  writeFileSync(golden, sector);
  truncateSync(golden, 64 * 1024 * 1024);

  const store = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000 });
  const image = store.images.create({
    name: "Golden",
    filename: "golden.raw",
    status: "ready",
    format: "raw",
  });
  store.images.addVersion(image.id, { path: golden, size_bytes: 64 * 1024 * 1024 });
  const machine = store.machines.create({
    name: opts.machineName,
    mac_address: opts.mac,
    status: "active",
    boot_action: "sanboot",
    overlay_policy: "persistent",
  });
  store.targets.create({
    name: `${opts.machineName}-target`,
    iqn: `${PREFIX}:${opts.machineName}`,
    portal_ip: server,
    machine_id: machine.id,
    system_image_id: image.id,
    initiator_iqn: `${PREFIX}:client-${opts.mac.replace(/:/g, "")}`,
    chap_username: `user-${opts.machineName}`,
    chap_password: "SecretFLEET0123456",
  });
  store.close();

  lan.startSiteDhcp(lan.subnets[0]!);
  const control = 20_000 + ((process.pid + 5_000) % 10_000);
  lan.spawn("tgtd", ["-f", "-C", String(control), "--iscsi", `portal=${server}:3260`]);
  t.teardown(() => {
    try {
      lan.exec("tgtadm", ["-C", String(control), "--op", "delete", "--mode", "system"]);
    } catch {
      // killed with the namespace's processes
    }
  });
  for (let i = 0; ; i++) {
    try {
      lan.exec("tgtadm", ["-C", String(control), "--op", "show", "--mode", "sys"]);
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const daemon = await startDaemon(t, {
    wrapper: lan.wrapper,
    env: {
      BOOTFLEET_DATA_DIR: data,
      BOOTFLEET_HTTP_LISTEN: ":80",
      BOOTFLEET_TFTP_PORT: "69",
      BOOTFLEET_DHCP_ENABLED: "true",
      // The NIC's own iPXE chainloads bootfleet's over TFTP: the boot passes the ipxe phase.
      BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE: "true",
      BOOTFLEET_NETBOOT_INTERFACES: "br0",
      BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
      BOOTFLEET_ISCSI_TGT_CONTROL_PORT: String(control),
      BOOTFLEET_ISCSI_TGT_CONF_DIR: confDir,
      BOOTFLEET_ISCSI_SESSION_POLL_MS: "1000",
    },
    // A bound, not an expectation: two cores shared by many tests start it slowly.
    timeoutMs: 180_000,
  });
  const adminPassword = readFileSync(join(data, "initial-admin-password"), "utf8").trim();
  return { lan, daemon, server, machineId: machine.id, mac: opts.mac, adminPassword };
}
