import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import {
  bootGuest,
  GUEST_FILE_TIMEOUT_MS,
  GuestExecError,
  guestSkipReason,
} from "./harness/guest.js";
import { ensureGuestImage } from "./harness/image.js";

// The guest harness itself: the cached Debian image boots its own kernel with LIO, the
// enabled rtslib restore unit, the 9p share, an extra disk, exit codes, and a reboot that
// keeps the run's state. One boot and one reboot, like the guest tests that use it.
t.setTimeout(GUEST_FILE_TIMEOUT_MS);

t.test(
  "a Debian guest boots with LIO, a share, a disk, and survives a reboot",
  { skip: guestSkipReason() },
  async (t) => {
    const share = mkdtempSync(join(tmpdir(), "bf-guest-share-"));
    t.teardown(() => rmSync(share, { recursive: true, force: true }));
    const guest = await bootGuest(t, {
      shareDir: share,
      extraDisks: [{ sizeMiB: 256 }],
      log: (m) => t.comment(m),
    });
    // Attached to assertions; tap prints it only when one fails.
    const diag = () => ({ serial: guest.serialTail(40) });
    t.comment(`boot to ready: ${(guest.bootMs / 1000).toFixed(1)} s`);
    if (guest.failedUnits) t.comment(`degraded, failed units:\n${guest.failedUnits}`);

    t.test("runs Debian's kernel, not the host's", async (t) => {
      const release = (await guest.sh("uname -r")).trim();
      t.match(release, /^\d+\.\d+\.\d+-\d+-amd64$/, "a Debian kernel release", diag());
      t.not(release, execFileSync("uname", ["-r"], { encoding: "utf8" }).trim());
      t.equal(release, guest.image.kernelRelease, "the image's recorded kernel is the one running");
    });

    t.test("LIO's configfs appears once its modules load", async (t) => {
      await guest.sh("modprobe target_core_mod iscsi_target_mod");
      const version = await guest.exec(["cat", "/sys/kernel/config/target/version"]);
      t.match(version.stdout, /Target Engine Core ConfigFS/, "/sys/kernel/config/target", diag());
      // The iSCSI fabric's group is made on demand, as rtslib does it.
      const fabric = await guest.sh(
        "mkdir -p /sys/kernel/config/target/iscsi && ls /sys/kernel/config/target/iscsi",
      );
      t.match(fabric, /discovery_auth/, "the iSCSI fabric registered", diag());
      await guest.sh("rmdir /sys/kernel/config/target/iscsi");
    });

    t.test("rtslib-fb-targetctl restores LIO's saveconfig at boot", async (t) => {
      const r = await guest.exec(["systemctl", "is-enabled", "rtslib-fb-targetctl.service"]);
      t.equal(r.stdout.trim(), "enabled", "enabled", { stderr: r.stderr });
    });

    t.test("the share is readable and writable at /host", async (t) => {
      writeFileSync(join(share, "from-host.txt"), "hello from the host\n");
      t.equal(await guest.sh("cat /host/from-host.txt"), "hello from the host\n");
      await guest.sh("echo from the guest > /host/from-guest.txt");
      t.equal(
        execFileSync("cat", [join(share, "from-guest.txt")], { encoding: "utf8" }),
        "from the guest\n",
      );
    });

    t.test("the extra disk is /dev/vdb, of the size asked for", async (t) => {
      const bytes = (await guest.sh("blockdev --getsize64 /dev/vdb")).trim();
      t.equal(bytes, String(256 * 1024 * 1024), "256 MiB", { lsblk: await guest.sh("lsblk") });
      t.equal((await guest.sh("cat /sys/block/vdb/serial")).trim(), "bf-extra-0");
    });

    t.test("a failing command reports its exit code, stderr and stdin", async (t) => {
      const r = await guest.exec(["/bin/sh", "-c", "cat; echo oops >&2; exit 3"], {
        input: "fed through stdin\n",
      });
      t.same(r, { code: 3, stdout: "fed through stdin\n", stderr: "oops\n" });
      const err = await guest.sh("ls /nonexistent").catch((e: unknown) => e);
      t.type(err, GuestExecError);
      t.equal((err as GuestExecError).code, 2);
      t.match((err as GuestExecError).stderr, /No such file or directory/);
    });

    t.test("a command that outlives its time-out is killed and reported", async (t) => {
      const started = Date.now();
      await t.rejects(guest.exec(["sleep", "60"], { timeoutMs: 2_000 }), /timed out after 2000 ms/);
      t.ok(Date.now() - started < 20_000, "gave up within the time-out and a grace");
      // No procps in the guest: count the sleeps from /proc.
      const left = await guest.exec([
        "/bin/sh",
        "-c",
        "cat /proc/[0-9]*/comm 2>/dev/null | grep -cx sleep",
      ]);
      t.equal(left.stdout.trim(), "0", "no sleep left in the guest");
    });

    t.test("the guest network is up and port 80 is forwarded to httpBase", async (t) => {
      t.match(await guest.sh("ip -4 -o addr show"), /10\.0\.2\.15\//);
      await guest.sh("mkdir -p /srv/www && echo served > /srv/www/probe.txt");
      await guest.sh("systemd-run --unit=bf-http python3 -m http.server --directory /srv/www 80");
      let body = "";
      for (let i = 0; i < 40 && !body; i++) {
        body = await fetch(`${guest.httpBase}/probe.txt`)
          .then((r) => (r.ok ? r.text() : ""))
          .catch(() => "");
        if (!body) await new Promise((r) => setTimeout(r, 250));
      }
      t.equal(body, "served\n", `GET ${guest.httpBase}/probe.txt`, diag());
    });

    t.test("a reboot comes back with the run's state and the share", async (t) => {
      await guest.sh("echo kept > /root/before-reboot && sync");
      const bootId = (await guest.sh("cat /proc/sys/kernel/random/boot_id")).trim();
      await guest.reboot();
      t.comment(`reboot to ready: ${(guest.rebootMs / 1000).toFixed(1)} s`);
      t.not((await guest.sh("cat /proc/sys/kernel/random/boot_id")).trim(), bootId, "a new boot");
      t.equal(await guest.sh("cat /root/before-reboot"), "kept\n", "the overlay kept the write");
      t.equal(await guest.sh("cat /host/from-host.txt"), "hello from the host\n");
      // The run wrote to its qcow2 overlay only: the cached disk is as mkfs left it, before
      // recipe.json was written at the end of the build.
      const disk = statSync(guest.image.disk).mtimeMs;
      t.ok(disk <= statSync(join(guest.image.dir, "recipe.json")).mtimeMs, "cached disk untouched");
    });
  },
);

t.test(
  "a second lookup of the image comes from the cache",
  { skip: guestSkipReason() },
  async (t) => {
    const img = await ensureGuestImage();
    t.equal(img.built, false, "not rebuilt");
    t.ok(img.seconds < 2, `cached lookup took ${img.seconds} s`);
    t.comment(`cached lookup: ${(img.seconds * 1000).toFixed(0)} ms`);
  },
);
