import { execFileSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t, { type Test } from "tap";
import { tempDir } from "../helpers/daemon.js";
import {
  bootGuest,
  GUEST_FILE_TIMEOUT_MS,
  type Guest,
  GuestExecError,
  guestSkipReason,
} from "./harness/guest.js";
import { ensureGuestImage } from "./harness/image.js";

// Versions, updates, writeback snapshots and promotes with the lvm-thin overlay driver, on
// real device-mapper: this machine's kernel has none, so they run in the Debian guest. The
// driver module is this build's (dist/), run by this host's node (the guest is Debian 12 too),
// doing what VersionStorage and the reconciler ask of it: an overlay, a snapshot of it
// (freezeVersion), a restore (reset from the snapshot), a promote (freezeVersion into a
// version), an update's draft committed, retention deleting an origin.
// The same boot first proves the guest harness itself (Debian's kernel with LIO, the rtslib
// restore unit, the 9p share, an extra disk, exit codes, time-outs, the port forward): one
// guest boot fewer in CI than a file of its own. That a reboot keeps the run's state is
// proven by appliance.test.ts, whose reboot step depends on it.
// A bound, not a timing: on a 2-core host shared by several test runs a TCG boot of the
// guest has taken more than the harness's default 5 minutes.
const BOOT_BOUND_MS = 900_000;
/** Each guest command's bound (lvm and a node start are slow under TCG on a loaded host). */
const CMD = { timeoutMs: 300_000 };
t.setTimeout(GUEST_FILE_TIMEOUT_MS + BOOT_BOUND_MS);
const DIST = join(import.meta.dirname, "..", "..", "dist");

t.test(
  "lvm-thin: versions, updates, snapshots, restore, promote",
  { skip: guestSkipReason() },
  async (t) => {
    if (!existsSync(join(DIST, "iscsi", "overlay", "lvm-thin.js"))) {
      t.fail("dist/ is missing: run `npm run build` first (the guest runs the built driver)");
      return;
    }
    const share = tempDir(t, "bf-guest-lvm-");
    cpSync(DIST, join(share, "dist"), { recursive: true });
    copyFileSync(process.execPath, join(share, "node"));
    const g = await bootGuest(t, {
      shareDir: share,
      extraDisks: [{ sizeMiB: 512 }],
      log: (m) => t.comment(m),
    });
    t.comment(`boot to ready: ${(g.bootMs / 1000).toFixed(1)} s`);
    await t.test("the guest harness", (t) => harnessChecks(t, g, share));
    await g.sh(
      `pvcreate -q /dev/vdb && vgcreate -q bfvg /dev/vdb
     lvcreate -q -L 400M -T bfvg/pool
     lvcreate -q -V 64M -T bfvg/pool -n img1-v1
     printf 'GOLDEN-V1...' | dd of=/dev/bfvg/img1-v1 bs=512 conv=notrunc status=none && sync`,
      CMD,
    );
    // One driver call per run; a logger that says nothing (pino is not in the share).
    const script = `
    import { createLvmThinDriver } from "/host/dist/iscsi/overlay/lvm-thin.js";
    const quiet = { info() {}, warn() {}, error() {}, debug() {}, child() { return quiet; } };
    const d = createLvmThinDriver({ vg: "bfvg", logger: quiet });
    await d.check();
    const [op, a, b] = process.argv.slice(2);
    const r = op === "create" ? await d.create(a, b)
      : op === "reset" ? await d.reset(a, b)
      : op === "freeze" ? await d.freezeVersion(a, b)
      : op === "deleteVersion" ? await d.deleteVersion(a)
      : op === "delete" ? await d.delete(a)
      : await d.list();
    console.log(JSON.stringify(r ?? null));
  `;
    await g.sh(
      `cp /host/node /root/node && chmod +x /root/node && cat > /root/lvm.mjs <<'EOF'\n${script}\nEOF`,
      CMD,
    );
    const call = async (...args: string[]) =>
      JSON.parse(await g.sh(`/root/node /root/lvm.mjs ${args.join(" ")}`, CMD)) as {
        kind: string;
        path: string;
      } | null;
    const head = (dev: string) =>
      g.sh(`dd if=${dev} bs=512 count=1 iflag=direct status=none | head -c 12`, CMD);
    const write = (dev: string, text: string) =>
      g.sh(
        `printf '${text}' | dd of=${dev} bs=512 conv=notrunc oflag=direct status=none && sync`,
        CMD,
      );

    // A persistent machine's overlay, and what it wrote.
    const own = (await call("create", "bfvg/img1-v1", "t9-system"))!;
    t.equal(own.path, "/dev/bfvg/bfov_t9-system");
    await write(own.path, "MACHINE-WR-1");

    // Snapshot: a thin snapshot of the overlay; the machine writes on; restore.
    const snap = (await call("freeze", "t9-system", "snap-t9-0a1b2c3d"))!;
    t.same(snap, { kind: "block", path: "/dev/bfvg/snap-t9-0a1b2c3d", sizeBytes: 64 << 20 });
    t.match(
      await g.sh("lvs --noheadings -o lv_name,origin,pool_lv bfvg", CMD),
      /snap-t9-0a1b2c3d\s+bfov_t9-system\s+pool/,
      "the snapshot is a thin snapshot of the overlay, in the pool (no copy)",
    );
    await write(own.path, "MACHINE-WR-2");
    t.equal(await head(snap.path), "MACHINE-WR-1", "the snapshot keeps the state it was taken in");
    await call("reset", snap.path, "t9-system");
    t.equal(await head(own.path), "MACHINE-WR-1", "restore: the later write is gone");

    // Promote: the machine's writeback becomes version 2.
    const v2 = (await call("freeze", "t9-system", "img1-v2-0a1b2c3d"))!;
    t.equal(await head(v2.path), "MACHINE-WR-1", "version 2 holds the machine's state");
    await write(own.path, "MACHINE-WR-3");
    t.equal(await head(v2.path), "MACHINE-WR-1", "later writes never reach the version");

    // An update: a draft of version 2, written by the super-client, committed as version 3.
    const draft = (await call("create", "bfvg/img1-v2-0a1b2c3d", "u1-draft"))!;
    t.equal(await head(draft.path), "MACHINE-WR-1", "the draft starts as version 2");
    await write(draft.path, "DRAFT-WR-444");
    const v3 = (await call("freeze", "u1-draft", "img1-v3-0a1b2c3d"))!;
    await call("delete", "u1-draft");
    t.equal(await head(v3.path), "DRAFT-WR-444", "version 3 holds the draft's content");
    await call("reset", v3.path, "t9-system");
    t.equal(await head(own.path), "DRAFT-WR-444", "a reset moves the machine to version 3");

    // Retention deletes versions 1 and 2 (origins of the others), the snapshot goes too: the
    // thin snapshots made from them keep their content.
    await call("deleteVersion", "/dev/bfvg/img1-v1");
    await call("deleteVersion", v2.path);
    await call("deleteVersion", snap.path);
    t.equal(await head(v3.path), "DRAFT-WR-444", "version 3 survives its origins' deletion");
    t.equal(await head(own.path), "DRAFT-WR-444", "and so does the machine's overlay");
    t.same(
      await call("list"),
      ["t9-system"],
      "versions and snapshots are never listed as overlays",
    );
    await call("delete", "t9-system");
    t.same(
      (await g.sh("lvs --noheadings -o lv_name bfvg", CMD)).split(/\s+/).filter(Boolean).sort(),
      ["img1-v3-0a1b2c3d", "pool"],
      "only the kept version and the pool are left",
    );
    // The run wrote to its qcow2 overlay only: the cached disk is as mkfs left it, before
    // recipe.json was written at the end of the build.
    const disk = statSync(g.image.disk).mtimeMs;
    t.ok(disk <= statSync(join(g.image.dir, "recipe.json")).mtimeMs, "cached guest disk untouched");
  },
);

t.test(
  "a second lookup of the guest image comes from the cache",
  { skip: guestSkipReason() },
  async (t) => {
    const img = await ensureGuestImage();
    t.equal(img.built, false, "not rebuilt");
    t.ok(img.seconds < 2, `cached lookup took ${img.seconds} s`);
  },
);

/** What every guest test stands on, checked on this file's boot. */
async function harnessChecks(t: Test, guest: Guest, share: string): Promise<void> {
  // Attached to assertions; tap prints it only when one fails.
  const diag = () => ({ serial: guest.serialTail(40) });
  if (guest.failedUnits) t.comment(`degraded, failed units:\n${guest.failedUnits}`);

  const release = (await guest.sh("uname -r")).trim();
  t.match(release, /^\d+\.\d+\.\d+-\d+-amd64$/, "runs a Debian kernel release", diag());
  t.not(release, execFileSync("uname", ["-r"], { encoding: "utf8" }).trim(), "not the host's");
  t.equal(release, guest.image.kernelRelease, "the image's recorded kernel is the one running");

  await guest.sh("modprobe target_core_mod iscsi_target_mod");
  const version = await guest.exec(["cat", "/sys/kernel/config/target/version"]);
  t.match(version.stdout, /Target Engine Core ConfigFS/, "LIO's configfs is there", diag());
  // The iSCSI fabric's group is made on demand, as rtslib does it.
  const fabric = await guest.sh(
    "mkdir -p /sys/kernel/config/target/iscsi && ls /sys/kernel/config/target/iscsi",
  );
  t.match(fabric, /discovery_auth/, "the iSCSI fabric registered", diag());
  await guest.sh("rmdir /sys/kernel/config/target/iscsi");
  const unit = await guest.exec(["systemctl", "is-enabled", "rtslib-fb-targetctl.service"]);
  t.equal(unit.stdout.trim(), "enabled", "rtslib-fb-targetctl restores LIO at boot", {
    stderr: unit.stderr,
  });

  writeFileSync(join(share, "from-host.txt"), "hello from the host\n");
  t.equal(await guest.sh("cat /host/from-host.txt"), "hello from the host\n", "share readable");
  await guest.sh("echo from the guest > /host/from-guest.txt");
  t.equal(
    execFileSync("cat", [join(share, "from-guest.txt")], { encoding: "utf8" }),
    "from the guest\n",
    "share writable",
  );

  const bytes = (await guest.sh("blockdev --getsize64 /dev/vdb")).trim();
  t.equal(bytes, String(512 * 1024 * 1024), "the extra disk is /dev/vdb, 512 MiB", {
    lsblk: await guest.sh("lsblk"),
  });
  t.equal((await guest.sh("cat /sys/block/vdb/serial")).trim(), "bf-extra-0", "its serial");

  const r = await guest.exec(["/bin/sh", "-c", "cat; echo oops >&2; exit 3"], {
    input: "fed through stdin\n",
  });
  t.same(r, { code: 3, stdout: "fed through stdin\n", stderr: "oops\n" }, "exit code and streams");
  const err = await guest.sh("ls /nonexistent").catch((e: unknown) => e);
  t.type(err, GuestExecError);
  t.equal((err as GuestExecError).code, 2);
  t.match((err as GuestExecError).stderr, /No such file or directory/);

  const started = Date.now();
  await t.rejects(guest.exec(["sleep", "60"], { timeoutMs: 2_000 }), /timed out after 2000 ms/);
  t.ok(Date.now() - started < 20_000, "a command past its time-out is given up on");
  // No procps in the guest: count the sleeps from /proc.
  const left = await guest.exec([
    "/bin/sh",
    "-c",
    "cat /proc/[0-9]*/comm 2>/dev/null | grep -cx sleep",
  ]);
  t.equal(left.stdout.trim(), "0", "and killed: no sleep left in the guest");
  // A job's script reaches its shell as written: systemd would expand $x and ${x} itself.
  t.equal(
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell variable, for the guest's sh
    await guest.job('x=kept; echo "${x}-$x"; exit 0', 120_000),
    "kept-kept\n",
    "a job's shell variables are the script's",
  );
  await t.rejects(guest.job("exit 4", 120_000), /guest job failed \(4\)/, "a job's exit code");

  t.match(await guest.sh("ip -4 -o addr show"), /10\.0\.2\.15\//, "the guest network is up");
  await guest.sh("mkdir -p /srv/www && echo served > /srv/www/probe.txt");
  await guest.sh("systemd-run --unit=bf-http python3 -m http.server --directory /srv/www 80");
  let body = "";
  for (let i = 0; i < 40 && !body; i++) {
    body = await fetch(`${guest.httpBase}/probe.txt`)
      .then((res) => (res.ok ? res.text() : ""))
      .catch(() => "");
    if (!body) await new Promise((res) => setTimeout(res, 250));
  }
  t.equal(body, "served\n", `port 80 is forwarded: GET ${guest.httpBase}/probe.txt`, diag());
  await guest.sh("systemctl stop bf-http");
}
