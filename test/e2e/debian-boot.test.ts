import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import {
  copySparse,
  loginPrompt,
  sha256,
  shell as shellAt,
  startDisklessLab,
} from "../helpers/diskless-lab.js";
import { BUILD_TIMEOUT_MS, buildImage } from "../helpers/image-recipe.js";
import type { FirmwareClient } from "../helpers/lan.js";

// A real operating system, diskless: PCs boot the Debian 12 image of images/debian-12
// through the daemon (proxy DHCP, iPXE script, sanboot of their own reflink overlay on
// tgtd), each comes up under its own name from the iBFT, and what they write lands where
// the overlay policy says. The image is built once and cached by recipe hash.
const skip =
  process.getuid?.() === 0
    ? false
    : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU, mmdebstrap";

/** Bounds, not expectations: a Debian boot under TCG takes minutes, more on a loaded machine. */
const LOGIN_TIMEOUT = 900_000;
const SHELL_TIMEOUT = 240_000;
/** The daemon's start, the image copy and checksums: minutes on a loaded machine. */
const SETUP_TIMEOUT = 10 * 60_000;
// The sum of the bounds of every wait below: three rounds of boots, six shell commands
// (each waits for the prompt, then for its marker), and the setup.
t.setTimeout(BUILD_TIMEOUT_MS + SETUP_TIMEOUT + 3 * LOGIN_TIMEOUT + 12 * SHELL_TIMEOUT);

/** read_bytes of a process (bytes it caused to be read from storage), from /proc. */
function readBytes(pid: number): number {
  const m = /^read_bytes: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"));
  return Number(m?.[1] ?? Number.NaN);
}

const shell = (pc: FirmwareClient, command: string, marker: RegExp) =>
  shellAt(pc, command, marker, SHELL_TIMEOUT);

t.test("two PCs boot one Debian image diskless, each under its own name", { skip }, async (t) => {
  // The image: cached by recipe hash; a cold build is part of this test's time.
  const image = await buildImage("debian-12", { log: (m) => t.comment(m) });
  t.comment(
    `image ${image.path}: ${image.built ? "built" : "cached"} in ${image.seconds.toFixed(1)} s`,
  );

  const machines = {
    a: { name: "lab-pc-a", mac: "52:54:00:bf:de:0a", policy: "persistent" as const },
    b: { name: "lab-pc-b", mac: "52:54:00:bf:de:0b", policy: "reset" as const },
    // U has a host name of its own, apart from its machine name: the booted OS must show it.
    u: {
      name: "lab-pc-u",
      hostname: "lab-pc-uefi",
      mac: "52:54:00:bf:de:0c",
      policy: "reset" as const,
    },
  };
  const lab = await startDisklessLab(t, {
    name: "bf-e2e-deb",
    net: "10.99.0",
    fsBytes: 8 * 1024 ** 3,
    writeGolden: (path) => copySparse(image.path, path),
    machines,
    // It applies every target (tgtadm calls) before it says ready: slow on a loaded machine.
    daemonTimeoutMs: 120_000,
  });
  const { lan, golden, tgtd } = lab;
  const goldenSize = statSync(golden).size;
  const goldenSum = await sha256(golden);
  const overlay = lab.overlay;

  // Optional: every read tgtd makes of the overlays during the first boots, for the boot
  // storm benchmark (bench/storm/boot-set/README.md says how it is made).
  const bootSetDir = process.env.BOOTFLEET_BOOTSET_DIR;
  let trace: ChildProcess | undefined;
  if (bootSetDir) {
    mkdirSync(bootSetDir, { recursive: true });
    trace = spawn(
      "strace",
      [
        "-f",
        "-y",
        "-s",
        "0",
        "-e",
        "trace=pread64,preadv",
        "-o",
        join(bootSetDir, "strace.txt"),
        "-p",
        String(tgtd.pid),
      ],
      { stdio: "ignore" },
    );
    t.teardown(() => {
      trace?.kill("SIGINT");
    });
    await new Promise((r) => setTimeout(r, 1000));
  }

  // Cold caches, so tgtd's read_bytes is what one boot of each PC costs the server's disk.
  writeFileSync("/proc/sys/vm/drop_caches", "3");
  const readBefore = readBytes(tgtd.pid!);

  // First boots, both at once.
  const started = Date.now();
  const a1 = lan.startBiosClient({
    bridge: "br0",
    mac: machines.a.mac,
    memoryMiB: 512,
    serialInput: true,
  });
  t.teardown(() => a1.kill());
  const b1 = lan.startBiosClient({
    bridge: "br0",
    mac: machines.b.mac,
    memoryMiB: 512,
    serialInput: true,
  });
  t.teardown(() => b1.kill());
  const [aUp, bUp] = await Promise.all(
    [a1, b1].map(async (pc, i) => {
      const name = i === 0 ? machines.a.name : machines.b.name;
      await pc.waitFor(loginPrompt(name), LOGIN_TIMEOUT);
      return (Date.now() - started) / 1000;
    }),
  );
  t.pass(`${machines.a.name} reached its login prompt under its own name`);
  t.pass(`${machines.b.name} reached its login prompt under its own name`);
  t.comment(`BIOS, two at once: QEMU start to login prompt ${aUp} s (A), ${bUp} s (B)`);
  const readDuring = readBytes(tgtd.pid!) - readBefore;
  t.comment(`tgtd read ${(readDuring / 2 ** 20).toFixed(1)} MiB from disk during both boots`);
  if (trace) {
    trace.kill("SIGINT");
    trace = undefined;
  }

  // Both got their name from the iBFT, not from the image (whose /etc/hostname is debian-12).
  for (const [pc, m] of [
    [a1, machines.a],
    [b1, machines.b],
  ] as const) {
    const out = await shell(
      pc,
      "echo BF-HOST-$(hostname)-$(cat /sys/firmware/ibft/ethernet0/hostname)-$((6*7))",
      /BF-HOST-\S+-42/,
    );
    t.equal(out, `BF-HOST-${m.name}-${m.name}-42`, `${m.name}: hostname is the iBFT's`);
  }

  // Each writes a file on its root (its iSCSI disk), flushed, then the PC is reset.
  for (const pc of [a1, b1]) {
    await shell(
      pc,
      "echo BF-PROOF-$((40+2)) >/root/bf-proof && sync && echo BF-SYNCED-$((40+2))",
      /BF-SYNCED-42/,
    );
  }
  a1.kill();
  b1.kill();

  // Second boots: persistent A still has its file, reset-on-reboot B does not.
  const a2 = lan.startBiosClient({
    bridge: "br0",
    mac: machines.a.mac,
    memoryMiB: 512,
    serialInput: true,
  });
  t.teardown(() => a2.kill());
  const b2 = lan.startBiosClient({
    bridge: "br0",
    mac: machines.b.mac,
    memoryMiB: 512,
    serialInput: true,
  });
  t.teardown(() => b2.kill());
  await Promise.all([
    a2.waitFor(loginPrompt("lab-pc-a"), LOGIN_TIMEOUT),
    b2.waitFor(loginPrompt("lab-pc-b"), LOGIN_TIMEOUT),
  ]);
  const probe = "cat /root/bf-proof 2>/dev/null || echo BF-GONE-$((40+2))";
  t.equal(
    await shell(a2, probe, /BF-(PROOF|GONE)-42/),
    "BF-PROOF-42",
    "persistent A still has its file after a reboot",
  );
  t.equal(
    await shell(b2, probe, /BF-(PROOF|GONE)-42/),
    "BF-GONE-42",
    "reset-on-reboot B booted a fresh overlay: its file is gone",
  );
  a2.kill();
  b2.kill();

  // The same image on UEFI: the firmware's own PXE loads snponly.efi, whose sanboot starts
  // GRUB from the ESP's removable path, and Linux finds the iBFT in ACPI as on BIOS.
  const uStarted = Date.now();
  const u = lan.startUefiClient({ bridge: "br0", mac: machines.u.mac, serialInput: true });
  t.teardown(() => u.kill());
  await u.waitFor(loginPrompt("lab-pc-uefi"), LOGIN_TIMEOUT);
  t.pass("a UEFI PC boots the same image to its login prompt under its machine's host name");
  t.comment(`UEFI, alone: QEMU start to login prompt ${(Date.now() - uStarted) / 1000} s`);
  u.kill();

  t.equal(await sha256(golden), goldenSum, "the golden image is unchanged");
  t.ok(statSync(overlay("a")).size === goldenSize, "A's overlay is a full-size clone");
});
