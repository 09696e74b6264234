import { existsSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { writeBootSector } from "../helpers/boot-lan.js";
import { startDisklessLab } from "../helpers/diskless-lab.js";
import { readAt } from "../helpers/file-at.js";

// The heart of the product, end to end: BIOS PCs PXE-boot, sanboot their own reflink
// overlay of one golden image over iSCSI (tgtd), and the disk writes land where they must.
const skip =
  process.getuid?.() === 0 ? false : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU";
const BOOT_TIMEOUT = 150_000;

const WRITTEN = "WRITTEN-BY-BOOT";

t.test("BIOS PCs sanboot their own overlays of one golden image", { skip }, async (t) => {
  // The golden image: 64 MiB with test/fixtures/boot/boot-sector.asm in front. It reads
  // LBA 3 of its boot disk, prints "DISKLESS-BOOT-OK FRESH" or "... SEEN" (when a previous
  // boot wrote there), then writes "WRITTEN-BY-BOOT" to LBA 3 and prints "DISKLESS-WRITE-OK".
  const machines = {
    a: { name: "lab-pc-a", mac: "52:54:00:bf:50:0a", policy: "persistent" as const },
    b: { name: "lab-pc-b", mac: "52:54:00:bf:50:0b", policy: "reset" as const },
  };
  const lab = await startDisklessLab(t, {
    name: "bf-e2e-san",
    net: "10.99.0",
    fsBytes: 2 * 1024 ** 3,
    writeGolden: writeBootSector,
    machines,
    env: { BOOTFLEET_LOG_LEVEL: "debug" },
  });
  const { lan, data, daemon, golden, overlay, ids } = lab;
  t.ok(
    daemon.logs.some((l) => l.msg === "iSCSI targets reconciled"),
    "targets applied at start",
  );

  // Machine A, first boot: a fresh disk, and its write lands in its own overlay.
  const a1 = lan.startBiosClient({ bridge: "br0", mac: machines.a.mac });
  t.teardown(() => a1.kill());
  await a1.waitFor(/DISKLESS-BOOT-OK FRESH[\s\S]*DISKLESS-WRITE-OK/, BOOT_TIMEOUT);
  t.ok(existsSync(overlay("a")), "A's overlay exists");
  t.equal(readAt(overlay("a"), 3 * 512, WRITTEN.length), WRITTEN, "A's write is in A's overlay");
  t.equal(readAt(golden, 3 * 512, 512), "\0".repeat(512), "and not in the golden image");

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
  t.equal(readAt(overlay("b"), 3 * 512, WRITTEN.length), WRITTEN, "B's write is in B's overlay");

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
    inq("user-a", "WrongPassword0000", ids.a!.iqn, ids.a!.initiator),
    "refused",
    "wrong CHAP password",
  );
  t.equal(
    inq("user-a", ids.a!.chapPassword, ids.a!.iqn, ids.b!.initiator),
    "refused",
    "another machine's initiator",
  );
  t.equal(
    inq("user-b", ids.b!.chapPassword, ids.a!.iqn, ids.b!.initiator),
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
  // On tgt the user alternates between two names (a spare account made ahead of the boot).
  const { chap_password: current, chap_username: currentUser } = now.targets.get(ids.a!.target)!;
  now.close();
  t.not(current, ids.a!.chapPassword, "A's secret changed with its boots");
  t.equal(
    inq("user-a", ids.a!.chapPassword, ids.a!.iqn, ids.a!.initiator),
    "refused",
    "the first one is dead",
  );
  t.equal(
    inq(currentUser, current, ids.a!.iqn, ids.a!.initiator),
    "logged in",
    "A's own credentials work",
  );
});
