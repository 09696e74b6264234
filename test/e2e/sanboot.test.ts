import { closeSync, existsSync, openSync, readSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { TestLan } from "../helpers/lan.js";
import { mountLoopFs } from "../iscsi/overlay/loopfs.js";

// The heart of the product, end to end: BIOS PCs PXE-boot, sanboot their own reflink
// overlay of one golden image over iSCSI (tgtd), and the disk writes land where they must.
const skip =
  process.getuid?.() === 0 ? false : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU";
const BOOT_TIMEOUT = 150_000;

/**
 * test/fixtures/boot/boot-sector.asm, assembled: it reads LBA 3 of its boot disk, prints
 * "DISKLESS-BOOT-OK FRESH" or "... SEEN" (when a previous boot wrote there), then writes
 * "WRITTEN-BY-BOOT" to LBA 3 and prints "DISKLESS-WRITE-OK".
 */
const BOOT_CODE =
  "fa31c08ed88ec08ed0bc007cfb8816687cb80102b9040030f68a16687cbb0080cd13722dbe697c803e0080577503be827ce82500b80103b9040030f68a16687cbbc47ccd13720abe9a7ce80c00faf4ebfcbeae7ce80200ebf4ac08c07409b40ebb0700cd10ebf2c3004449534b4c4553532d424f4f542d4f4b2046524553480d0a004449534b4c4553532d424f4f542d4f4b205345454e0d0a004449534b4c4553532d57524954452d4f4b0d0a004449534b4c4553532d4449534b2d4552524f520d0a005752495454454e2d42592d424f4f54";

function bootSector(): Buffer {
  const sector = Buffer.alloc(512);
  Buffer.from(BOOT_CODE, "hex").copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

function readSector(path: string, lba: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const b = Buffer.alloc(512);
    readSync(fd, b, 0, 512, lba * 512);
    return b;
  } finally {
    closeSync(fd);
  }
}

const WRITTEN = Buffer.from("WRITTEN-BY-BOOT");
const PREFIX = "iqn.2024-01.io.bootfleet";

t.test("BIOS PCs sanboot their own overlays of one golden image", { skip }, async (t) => {
  const lan = TestLan.create(t, "bf-e2e-san", [
    { bridge: "br0", address: "10.99.0.1", dhcpRange: ["10.99.0.50", "10.99.0.99"] },
  ]);
  const fs = await mountLoopFs("xfs-reflink", 2 * 1024 ** 3, "e2e-san");
  t.teardown(() => fs.cleanup());
  const data = fs.dir;
  const confDir = tempDir(t, "bf-tgt-conf-");

  // The golden image: 64 MiB with the boot sector in front.
  const golden = join(data, "images", "golden.raw");
  const { mkdirSync } = await import("node:fs");
  mkdirSync(join(data, "images"), { recursive: true });
  writeFileSync(golden, bootSector());
  truncateSync(golden, 64 * 1024 * 1024);

  const machines = {
    a: { name: "lab-pc-a", mac: "52:54:00:bf:50:0a", policy: "persistent" as const },
    b: { name: "lab-pc-b", mac: "52:54:00:bf:50:0b", policy: "reset" as const },
  };
  const ids: Record<
    string,
    { machine: number; target: number; iqn: string; init: string; pass: string }
  > = {};
  const store = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000 });
  const image = store.images.create({
    name: "Golden",
    filename: "golden.raw",
    status: "ready",
    format: "raw",
  });
  store.images.addVersion(image.id, { path: golden, size_bytes: 64 * 1024 * 1024 });
  for (const [key, m] of Object.entries(machines)) {
    const machine = store.machines.create({
      name: m.name,
      mac_address: m.mac,
      status: "active",
      boot_action: "sanboot",
      overlay_policy: m.policy,
    });
    const iqn = `${PREFIX}:${m.name}`;
    const init = `${PREFIX}:client-${m.mac.replace(/:/g, "")}`;
    const pass = `Secret${key.toUpperCase()}0123456`;
    const target = store.targets.create({
      name: `${m.name}-target`,
      iqn,
      portal_ip: "10.99.0.1",
      machine_id: machine.id,
      system_image_id: image.id,
      initiator_iqn: init,
      chap_username: `user-${key}`,
      chap_password: pass,
    });
    ids[key] = { machine: machine.id, target: target.id, iqn, init, pass };
  }
  store.close();

  // The site's DHCP, a tgtd of this test's own in the namespace, and bootfleetd.
  lan.startSiteDhcp(lan.subnets[0]!);
  const control = 20_000 + (process.pid % 10_000);
  lan.spawn("tgtd", ["-f", "-C", String(control), "--iscsi", "portal=10.99.0.1:3260"]);
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
      BOOTFLEET_NETBOOT_INTERFACES: "br0",
      BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
      BOOTFLEET_ISCSI_TGT_CONTROL_PORT: String(control),
      BOOTFLEET_ISCSI_TGT_CONF_DIR: confDir,
      BOOTFLEET_ISCSI_SESSION_POLL_MS: "1000",
      BOOTFLEET_LOG_LEVEL: "debug",
    },
  });
  t.ok(
    daemon.logs.some((l) => l.msg === "iSCSI targets reconciled"),
    "targets applied at start",
  );
  const overlay = (key: string) => join(data, "overlays", `t${ids[key]!.target}-system.img`);

  // Machine A, first boot: a fresh disk, and its write lands in its own overlay.
  const a1 = lan.startBiosClient({ bridge: "br0", mac: machines.a.mac });
  t.teardown(() => a1.kill());
  await a1.waitFor(/DISKLESS-BOOT-OK FRESH[\s\S]*DISKLESS-WRITE-OK/, BOOT_TIMEOUT);
  t.ok(existsSync(overlay("a")), "A's overlay exists");
  t.same(
    readSector(overlay("a"), 3).subarray(0, WRITTEN.length),
    WRITTEN,
    "A's write is in A's overlay",
  );
  t.ok(
    readSector(golden, 3).every((b) => b === 0),
    "and not in the golden image",
  );

  // The daemon sees A logged in: its boot session becomes active.
  const deadline = Date.now() + 20_000;
  let session: ReturnType<Store["sessions"]["current"]>;
  for (;;) {
    const s = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000, readonly: true });
    session = s.sessions.current(ids.a!.machine);
    s.close();
    if (session?.status === "active" || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.equal(session?.status, "active", "A's boot session is active once it logged in");
  t.ok(
    session?.iscsi_login_at && session.dhcp_offer_at && session.script_served_at,
    "every phase stamped",
  );

  // Machine B boots the same image and does not see A's write.
  const b1 = lan.startBiosClient({ bridge: "br0", mac: machines.b.mac });
  t.teardown(() => b1.kill());
  await b1.waitFor(/DISKLESS-BOOT-OK FRESH[\s\S]*DISKLESS-WRITE-OK/, BOOT_TIMEOUT);
  t.pass("B's disk was fresh: A's write is A's alone");
  t.same(
    readSector(overlay("b"), 3).subarray(0, WRITTEN.length),
    WRITTEN,
    "B's write is in B's overlay",
  );

  // Logins with a wrong CHAP password, or with another machine's initiator name, are refused.
  const host = lan.addHost("br0", "10.99.0.201");
  const inq = (user: string, pass: string, iqn: string, initiator: string) => {
    try {
      lan.execIn(host, "iscsi-inq", [
        `--initiator-name=${initiator}`,
        `iscsi://${user}%${pass}@10.99.0.1:3260/${iqn}/1`,
      ]);
      return "logged in";
    } catch {
      return "refused";
    }
  };
  t.equal(
    inq("user-a", "WrongPassword0000", ids.a!.iqn, ids.a!.init),
    "refused",
    "wrong CHAP password",
  );
  t.equal(
    inq("user-a", ids.a!.pass, ids.a!.iqn, ids.b!.init),
    "refused",
    "another machine's initiator",
  );
  t.equal(
    inq("user-b", ids.b!.pass, ids.a!.iqn, ids.b!.init),
    "refused",
    "B's credentials on A's target",
  );

  // Reboot both: A (persistent) keeps its write, B (reset on reboot) starts fresh.
  a1.kill();
  b1.kill();
  const a2 = lan.startBiosClient({ bridge: "br0", mac: machines.a.mac });
  t.teardown(() => a2.kill());
  await a2.waitFor(/DISKLESS-BOOT-OK (FRESH|SEEN)/, BOOT_TIMEOUT);
  t.match(a2.serial(), /DISKLESS-BOOT-OK SEEN/, "persistent A still has its write after a reboot");
  a2.kill();
  const b2 = lan.startBiosClient({ bridge: "br0", mac: machines.b.mac });
  t.teardown(() => b2.kill());
  await b2.waitFor(/DISKLESS-BOOT-OK (FRESH|SEEN)/, BOOT_TIMEOUT);
  t.match(b2.serial(), /DISKLESS-BOOT-OK FRESH/, "reset-on-reboot B got a fresh overlay");
  b2.kill();

  // With A's own name and current password (each boot makes a new one) the same tool does
  // log in: the refusals above were the ACL and CHAP at work, not a network problem.
  const now = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000, readonly: true });
  const current = now.targets.get(ids.a!.target)!.chap_password;
  now.close();
  t.not(current, ids.a!.pass, "A's secret changed with its boots");
  t.equal(inq("user-a", ids.a!.pass, ids.a!.iqn, ids.a!.init), "refused", "the first one is dead");
  t.equal(inq("user-a", current, ids.a!.iqn, ids.a!.init), "logged in", "A's own credentials work");
});
