import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { writeBootSector } from "../helpers/boot-lan.js";
import { startDisklessLab } from "../helpers/diskless-lab.js";

// The weekly loop of a diskless fleet, end to end with real firmware: BIOS PCs sanboot
// reflink overlays through tgtd; an update opened on SUPER becomes version 2 at commit,
// the reset-on-reboot PC sees it at its next boot, and a rollback takes it away again.
const skip =
  process.getuid?.() === 0 ? false : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU";
const BOOT_TIMEOUT = 150_000;

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const BOOTED = /DISKLESS-BOOT-OK (FRESH|SEEN)[\s\S]*DISKLESS-WRITE-OK/;

t.test("update cycle: open on SUPER, commit, PC-B sees it, rollback", { skip }, async (t) => {
  const machines = {
    super: { name: "lab-super", mac: "52:54:00:bf:51:0a", policy: "persistent" as const },
    b: { name: "lab-pc-b", mac: "52:54:00:bf:51:0b", policy: "reset" as const },
  };
  // Version 1: 64 MiB with the boot sector in front (test/helpers/boot-lan.ts): it prints
  // "DISKLESS-BOOT-OK FRESH" or "... SEEN" (LBA 3 already written), then writes LBA 3.
  let v1Sha = "";
  const lab = await startDisklessLab(t, {
    name: "bf-e2e-upd",
    net: "10.98.0",
    fsBytes: 2 * 1024 ** 3,
    writeGolden(path) {
      writeBootSector(path);
      v1Sha = sha256(path);
    },
    machines,
    env: { BOOTFLEET_LOG_LEVEL: "debug" },
  });
  const { lan, data, daemon, ids, api, dropIscsiConnections } = lab;
  const v1 = lab.golden;
  const image = { id: lab.imageId };

  // PC-B (reset on reboot) boots version 1 clean.
  const b1 = lan.startBiosClient({ bridge: "br0", mac: machines.b.mac });
  t.teardown(() => b1.kill());
  await b1.waitFor(BOOTED, BOOT_TIMEOUT);
  t.match(b1.serial(), /DISKLESS-BOOT-OK FRESH/, "PC-B boots version 1 clean");
  b1.kill();

  // An update on SUPER; nothing to commit before SUPER has booted the draft.
  const opened = api("POST", `/images/${image.id}/updates`, {
    machine_id: ids.super!.machine,
    comment: "patch Tuesday",
  });
  t.equal(opened.status, 201, "update opened");
  t.match(opened.json, { image_id: image.id, base_version: 1, status: "open" });
  const updateId = opened.json.id as number;
  const early = api("POST", `/images/${image.id}/updates/${updateId}/commit`, { comment: "x" });
  t.equal(early.status, 409, "commit before the draft was booted is refused");
  t.match(early.json?.detail, /has not booted the draft/);
  const second = api("POST", `/images/${image.id}/updates`, { machine_id: ids.b!.machine });
  t.equal(second.status, 409, "a second open update is refused");
  t.match(second.json?.detail, new RegExp(`open update ${updateId} on machine lab-super`));

  // SUPER boots its draft and writes to it.
  const s1 = lan.startBiosClient({ bridge: "br0", mac: machines.super.mac });
  t.teardown(() => s1.kill());
  await s1.waitFor(BOOTED, BOOT_TIMEOUT);
  t.match(s1.serial(), /DISKLESS-BOOT-OK FRESH/, "SUPER's draft starts as version 1");
  const live = api("POST", `/images/${image.id}/updates/${updateId}/commit`, { comment: "x" });
  t.equal(live.status, 409, "commit while SUPER runs is refused");
  t.match(live.json?.detail, /lab-super is running/, "naming the running machine");
  s1.kill();
  // A PC that shuts down logs out of its target; a killed QEMU leaves a half-open TCP
  // connection that tgtd would keep for hours. Closing it on the target's side is what
  // the shutdown's logout does (nothing else is connected at this point).
  dropIscsiConnections();

  // Once SUPER's session is gone, commit: version 2, current.
  let commit = live;
  for (let i = 0; i < 60 && commit.status === 409 && commit.json?.reason === "live_session"; i++) {
    await new Promise((r) => setTimeout(r, 500));
    commit = api("POST", `/images/${image.id}/updates/${updateId}/commit`, {
      comment: "patched on SUPER",
    });
  }
  t.equal(commit.status, 200, `commit succeeds once SUPER is off (${JSON.stringify(commit.json)})`);
  t.match(commit.json, { version: 2, comment: "patched on SUPER", is_current: true });
  const versions = api("GET", `/images/${image.id}/versions`);
  t.same(
    versions.json.map((v: { version: number }) => v.version),
    [1, 2],
    "two versions",
  );
  t.equal(api("GET", `/images/${image.id}`).json.current_version, 2, "current version 2");
  const committedLog = await daemon.waitForLog(
    (l) => l.msg === "image update committed: new current version",
    30_000,
  );
  t.comment(`commit took ${String(committedLog?.ms)} ms (reflink clone of the draft)`);

  // PC-B reboots onto version 2 and sees SUPER's write.
  const b2 = lan.startBiosClient({ bridge: "br0", mac: machines.b.mac });
  t.teardown(() => b2.kill());
  await b2.waitFor(BOOTED, BOOT_TIMEOUT);
  t.match(b2.serial(), /DISKLESS-BOOT-OK SEEN/, "PC-B sees SUPER's write after the commit");
  // A reset of a running machine is refused, naming it.
  const busy = api("POST", `/targets/${ids.b!.target}/reset`);
  t.equal(busy.status, 409, "reset with a live session is refused");
  t.match(busy.json?.detail, /lab-pc-b/, "naming the machine");
  b2.kill();
  dropIscsiConnections();

  // Rollback to 1: PC-B boots clean again.
  const rolled = api("POST", `/images/${image.id}/rollback`, { version: 1 });
  t.equal(rolled.status, 200, "rollback");
  t.equal(rolled.json.current_version, 1, "current version 1");
  const missing = api("POST", `/images/${image.id}/rollback`, { version: 9 });
  t.equal(missing.status, 404, "rollback to a missing version is refused");
  const b3 = lan.startBiosClient({ bridge: "br0", mac: machines.b.mac });
  t.teardown(() => b3.kill());
  await b3.waitFor(BOOTED, BOOT_TIMEOUT);
  t.match(b3.serial(), /DISKLESS-BOOT-OK FRESH/, "PC-B boots clean after the rollback");
  b3.kill();
  dropIscsiConnections();

  // SUPER (persistent, off) is reset onto the current version.
  const reset = api("POST", `/targets/${ids.super!.target}/reset`);
  t.equal(reset.status, 200, `SUPER reset while off (${JSON.stringify(reset.json)})`);
  t.match(reset.json, { overlay_version: 1, versions_behind: 0 });

  // Writeback snapshots: SUPER (persistent, fresh on version 1) gets a restore point.
  const snapFiles = () => readdirSync(join(data, "images")).filter((f) => f.startsWith("snap-"));
  const noSnap = api("POST", `/targets/${ids.b!.target}/snapshots`, { comment: "x" });
  t.equal(noSnap.status, 409, "no snapshot of a reset-on-reboot machine");
  t.match(noSnap.json, { reason: "reset_policy", detail: /lab-pc-b resets its overlay/ });
  const snap = api("POST", `/targets/${ids.super!.target}/snapshots`, { comment: "clean v1" });
  t.equal(snap.status, 201, `snapshot taken (${JSON.stringify(snap.json)})`);
  t.match(snap.json, { target_id: ids.super!.target, image_version: 1, comment: "clean v1" });
  t.equal(snapFiles().length, 1, "its clone is in the image folder");
  t.same(
    api("GET", `/targets/${ids.super!.target}/snapshots`).json.map((x: { id: number }) => x.id),
    [snap.json.id],
    "listed",
  );

  // SUPER boots and writes; restore and promote are refused while it runs.
  const s2 = lan.startBiosClient({ bridge: "br0", mac: machines.super.mac });
  t.teardown(() => s2.kill());
  await s2.waitFor(BOOTED, BOOT_TIMEOUT);
  t.match(s2.serial(), /DISKLESS-BOOT-OK FRESH/, "SUPER boots its fresh overlay");
  const restorePath = `/targets/${ids.super!.target}/snapshots/${snap.json.id}/restore`;
  let restored = api("POST", restorePath);
  t.equal(restored.status, 409, "restore with a live session is refused");
  t.match(restored.json, { reason: "live_session", detail: /lab-super has a live iSCSI session/ });
  const livePromote = api("POST", `/targets/${ids.super!.target}/promote`, { comment: "x" });
  t.equal(livePromote.status, 409, "promote with a live session is refused");
  t.match(livePromote.json?.detail, /lab-super is running .*not a consistent image/);
  s2.kill();
  dropIscsiConnections();
  for (let i = 0; i < 60 && restored.json?.reason === "live_session"; i++) {
    await new Promise((r) => setTimeout(r, 500));
    restored = api("POST", restorePath);
  }
  t.equal(restored.status, 200, `restored once SUPER is off (${JSON.stringify(restored.json)})`);
  t.match(restored.json, { overlay_version: 1 });

  // The write is gone: SUPER boots the snapshot's clean disk (and writes again).
  const s3 = lan.startBiosClient({ bridge: "br0", mac: machines.super.mac });
  t.teardown(() => s3.kill());
  await s3.waitFor(BOOTED, BOOT_TIMEOUT);
  t.match(s3.serial(), /DISKLESS-BOOT-OK FRESH/, "after the restore SUPER's write is gone");
  s3.kill();
  dropIscsiConnections();

  // Promote SUPER's writeback: version 3, current, whose content has SUPER's write.
  let promoted = api("POST", `/targets/${ids.super!.target}/promote`, { comment: "SUPER's" });
  for (let i = 0; i < 60 && promoted.json?.reason === "live_session"; i++) {
    await new Promise((r) => setTimeout(r, 500));
    promoted = api("POST", `/targets/${ids.super!.target}/promote`, { comment: "SUPER's" });
  }
  t.equal(promoted.status, 200, `promoted (${JSON.stringify(promoted.json)})`);
  t.match(promoted.json, { version: 3, comment: "SUPER's", is_current: true });
  const v3File = readdirSync(join(data, "images")).find((f) => f.startsWith(`img${image.id}-v3-`));
  t.ok(v3File, "version 3's file is in the image folder");
  const v3 = readFileSync(join(data, "images", v3File!));
  t.match(
    v3.subarray(3 * 512, 4 * 512).toString("latin1"),
    /WRITTEN-BY-BOOT/,
    "version 3 holds SUPER's write",
  );
  t.match(api("GET", `/targets/${ids.super!.target}`).json, {
    overlay_version: 3,
    versions_behind: 0,
  });

  // Pin: only to a version that exists.
  const badPin = api("PUT", `/targets/${ids.b!.target}/pin`, { pinned_version: 9 });
  t.equal(badPin.status, 422, "pin to a missing version is refused");
  t.match(badPin.json?.detail, /pinned_version: image Golden has no version 9/);
  const pin = api("PUT", `/targets/${ids.b!.target}/pin`, { pinned_version: 1 });
  t.equal(pin.status, 200, "PC-B pinned to version 1");
  t.match(api("GET", `/targets/${ids.b!.target}`).json, { pinned_version: 1 });

  // The snapshot's file goes with it.
  const del = api("DELETE", `/targets/${ids.super!.target}/snapshots/${snap.json.id}`);
  t.equal(del.status, 200, "snapshot deleted");
  t.same(snapFiles(), [], "and its file");

  t.equal(sha256(v1), v1Sha, "version 1's file never changed");
});
