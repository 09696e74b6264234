import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import {
  checkIpxe,
  checkLinkSpeed,
  checkLio,
  checkOverlayDriver,
  checkPort,
  checkReflink,
  checkReserveSpace,
  checkSsd,
} from "../../src/cli/doctor.js";

/** Each check tried on a machine state where it must fail, and where it must pass. */

t.test("a port held by another socket fails, a free one passes", async (t) => {
  const holder = createServer();
  await new Promise<void>((r) => holder.listen({ port: 0, host: "0.0.0.0" }, () => r()));
  t.teardown(() => holder.close());
  const port = (holder.address() as { port: number }).port;
  const held = await checkPort({ port, proto: "tcp", what: "HTTP" });
  t.equal(held.status, "fail", held.detail);
  t.match(held.detail, /EADDRINUSE/);
  t.match(held.fix, /ss -lpn/);
  holder.close();
  await new Promise((r) => holder.once("close", r));
  t.equal((await checkPort({ port, proto: "tcp", what: "HTTP" })).status, "ok");
});

t.test("a missing iPXE file fails naming it", async (t) => {
  const dir = t.testdir({ "undionly.kpxe": "x" });
  const r = checkIpxe([join(dir, "undionly.kpxe"), join(dir, "ipxe.efi")]);
  t.equal(r.status, "fail");
  t.match(r.detail, /ipxe\.efi/);
  t.notMatch(r.detail, /undionly/);
  t.match(r.fix, /apt install ipxe/);
  t.equal(checkIpxe([join(dir, "undionly.kpxe")]).status, "ok");
});

t.test("a reserve above the free space fails", async (t) => {
  const dir = t.testdir({});
  const r = await checkReserveSpace(dir, 100);
  t.equal(r.status, "fail");
  t.match(r.detail, /reserve_percent/);
  t.equal((await checkReserveSpace(dir, 0)).status, "ok");
});

t.test(
  "reflink: fails on tmpfs",
  { skip: process.getuid?.() === 0 ? false : "mounting a tmpfs needs root" },
  async (t) => {
    const mnt = mkdtempSync(join(tmpdir(), `bf-doctor-tmpfs-${process.pid}-`));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt]);
    t.teardown(() => {
      execFileSync("umount", [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    });
    const r = checkReflink(mnt);
    t.equal(r.status, "fail", r.detail);
    t.match(r.fix, /XFS/);
  },
);

t.test("LIO, link speed and SSD read sysfs: a fake one where each fails", async (t) => {
  const sys = t.testdir({
    kernel: {},
    class: { net: { eth9: { speed: "100" }, veth9: { speed: "-1" } } },
  });
  const lio = checkLio(sys);
  t.equal(lio.status, "warn");
  t.match(lio.detail, /configfs not mounted/);
  t.match(lio.fix, /modprobe target_core_mod/);
  mkdirSync(join(sys, "kernel/config/target"), { recursive: true });
  t.equal(checkLio(sys).status, "ok");

  const slow = checkLinkSpeed("eth9", sys);
  t.equal(slow.status, "fail");
  t.match(slow.detail, /100 Mb\/s/);
  t.equal(checkLinkSpeed("nosuch0", sys).status, "warn");
  t.match(
    checkLinkSpeed("veth9", sys).detail,
    /unknown/,
    "a virtual NIC's -1 is unknown, not slow",
  );

  const ssd = checkSsd(sys, sys);
  t.equal(ssd.status, "warn", "no /sys/dev/block in the fake: cannot tell, says so");
  t.match(ssd.fix, /lsblk/);
});

t.test("the overlay driver check says which driver auto takes, and why", async (t) => {
  const sys = t.testdir({
    module: { dm_mod: {}, dm_snapshot: {}, loop: {} },
    kernel: { config: { target: {} } },
  });
  const shared = checkOverlayDriver("auto", "auto", sys);
  t.equal(shared.status, "ok");
  t.match(shared.detail, /^dm-snapshot \(auto\): .*page cache/);
  t.match(checkOverlayDriver("auto", "tgt", sys).detail, /^reflink \(auto\): .*tgt/);
  const noSnap = t.testdir({
    module: { dm_mod: {}, loop: {} },
    kernel: { config: { target: {} } },
  });
  const fallback = checkOverlayDriver("auto", "lio", noSnap);
  t.equal(fallback.status, "warn");
  t.match(fallback.detail, /^reflink \(auto\): the kernel lacks dm-snapshot/);
  t.match(fallback.fix, /modprobe dm_snapshot loop/);
  const forced = checkOverlayDriver("dm-snapshot", "lio", noSnap);
  t.equal(forced.status, "fail", "dm-snapshot configured on a kernel without it fails");
  t.equal(checkOverlayDriver("reflink", "lio", noSnap).detail, "reflink (configured)");
});
