import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import {
  copySparse,
  loginPrompt,
  sha256,
  shell,
  startDisklessLab,
} from "../helpers/diskless-lab.js";
import { BUILD_TIMEOUT_MS, buildImage } from "../helpers/image-recipe.js";
import type { FirmwareClient } from "../helpers/lan.js";

// The weekly loop with a real operating system: an update is opened on SUPER, SUPER boots
// the Debian image's draft and installs a package, the commit makes version 2 current,
// PC-B (reset on reboot) boots with the package; a rollback to 1 and PC-B boots without
// it; version 1's file never changed. No network apt: the test builds a tiny .deb and
// types it, base64, into SUPER's root shell on the serial console.
const skip =
  process.getuid?.() === 0
    ? false
    : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU, mmdebstrap, dpkg-deb";

/** Bounds, not expectations: a Debian boot under TCG takes minutes, more on a loaded machine. */
const LOGIN_TIMEOUT = 1_500_000;
const SHELL_TIMEOUT = 300_000;
const SETUP_TIMEOUT = 10 * 60_000;
// Three boots one after the other, five shell commands (prompt, then marker), the setup.
t.setTimeout(BUILD_TIMEOUT_MS + SETUP_TIMEOUT + 3 * LOGIN_TIMEOUT + 10 * SHELL_TIMEOUT);

const PACKAGE = "bf-proof";
const MACHINES = {
  super: { name: "lab-super", mac: "52:54:00:bf:d5:0a", policy: "persistent" as const },
  b: { name: "lab-pc-b", mac: "52:54:00:bf:d5:0b", policy: "reset" as const },
};

/** A .deb with one file, built with dpkg-deb; its bytes. */
function tinyDeb(): Buffer {
  const dir = mkdtempSync(join(tmpdir(), `bf-deb-${process.pid}-`));
  try {
    const root = join(dir, "root");
    mkdirSync(join(root, "DEBIAN"), { recursive: true });
    mkdirSync(join(root, "usr/share", PACKAGE), { recursive: true });
    writeFileSync(
      join(root, "DEBIAN/control"),
      [
        `Package: ${PACKAGE}`,
        "Version: 1.0",
        "Architecture: all",
        "Maintainer: bootfleet tests <tests@bootfleet.invalid>",
        "Description: installed on SUPER, seen by every PC after the commit",
        "",
      ].join("\n"),
    );
    writeFileSync(join(root, "usr/share", PACKAGE, "marker"), "installed on lab-super\n");
    const deb = join(dir, `${PACKAGE}.deb`);
    execFileSync("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build", root, deb], {
      stdio: "ignore",
    });
    return readFileSync(deb);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const HAS_PACKAGE = `dpkg -s ${PACKAGE} >/dev/null 2>&1 && echo BF-PKG-YES-$((40+2)) || echo BF-PKG-NO-$((40+2))`;
const PACKAGE_ANSWER = /BF-PKG-(YES|NO)-42/;

t.test(
  "Debian update cycle: a package installed on SUPER reaches PC-B, rollback removes it",
  { skip },
  async (t) => {
    const image = await buildImage("debian-12", { log: (m) => t.comment(m) });
    t.comment(`image ${image.path}: ${image.built ? "built" : "cached"}`);
    const lab = await startDisklessLab(t, {
      name: "bf-e2e-dupd",
      net: "10.95.0",
      fsBytes: 8 * 1024 ** 3,
      writeGolden: (path) => copySparse(image.path, path),
      machines: MACHINES,
    });
    const v1Sum = await sha256(lab.golden);
    const { api, imageId } = lab;

    const boot = async (key: keyof typeof MACHINES): Promise<FirmwareClient> => {
      const pc = lab.lan.startBiosClient({
        bridge: "br0",
        mac: MACHINES[key].mac,
        memoryMiB: 512,
        serialInput: true,
      });
      t.teardown(() => pc.kill());
      // A kernel panic ends the wait at once (QEMU stays up, halted), naming the panic.
      const seen = await pc.waitFor(
        new RegExp(`${loginPrompt(MACHINES[key].name).source}|Kernel panic - not syncing: [^\\n]*`),
        LOGIN_TIMEOUT,
      );
      if (seen[0].startsWith("Kernel panic")) throw new Error(`${MACHINES[key].name}: ${seen[0]}`);
      return pc;
    };
    /** A PC off: QEMU killed after a sync, its iSCSI connection closed as a logout would. */
    const off = (pc: FirmwareClient) => {
      pc.kill();
      lab.dropIscsiConnections();
    };

    const opened = api("POST", `/images/${imageId}/updates`, {
      machine_id: lab.ids.super!.machine,
      comment: `install ${PACKAGE}`,
    });
    t.equal(opened.status, 201, `update opened on SUPER (${JSON.stringify(opened.json)})`);
    const updateId = opened.json.id as number;

    // SUPER boots its draft and installs the package from a .deb typed on its console.
    const superPc = await boot("super");
    t.pass("SUPER booted the draft of version 1");
    const deb = tinyDeb()
      .toString("base64")
      .match(/.{1,76}/g)!;
    await shell(superPc, "base64 -d >/tmp/bf.deb <<'BFEOF'", /<<'BFEOF'/, SHELL_TIMEOUT);
    await superPc.type(`${deb.join("\r")}\rBFEOF\r`);
    const installed = await shell(
      superPc,
      `dpkg -i /tmp/bf.deb >/dev/null && sync && echo BF-INSTALLED-$((6*7))`,
      /BF-INSTALLED-42|dpkg: error[^\n]*/,
      SHELL_TIMEOUT,
    );
    t.equal(installed, "BF-INSTALLED-42", "dpkg installed the package on SUPER");
    t.equal(
      await shell(superPc, HAS_PACKAGE, PACKAGE_ANSWER, SHELL_TIMEOUT),
      "BF-PKG-YES-42",
      "SUPER has it",
    );
    off(superPc);

    // Commit once SUPER's session is gone: version 2, current.
    let commit = api("POST", `/images/${imageId}/updates/${updateId}/commit`, {
      comment: `${PACKAGE} installed on SUPER`,
    });
    for (
      let i = 0;
      i < 120 && commit.status === 409 && commit.json?.reason === "live_session";
      i++
    ) {
      await new Promise((r) => setTimeout(r, 500));
      commit = api("POST", `/images/${imageId}/updates/${updateId}/commit`, {
        comment: `${PACKAGE} installed on SUPER`,
      });
    }
    t.equal(commit.status, 200, `commit (${JSON.stringify(commit.json)})`);
    t.match(commit.json, { version: 2, is_current: true });
    t.equal(api("GET", `/images/${imageId}`).json.current_version, 2, "current version 2");

    // PC-B (reset on reboot) boots version 2: the package is there.
    const b2 = await boot("b");
    t.equal(
      await shell(b2, HAS_PACKAGE, PACKAGE_ANSWER, SHELL_TIMEOUT),
      "BF-PKG-YES-42",
      "PC-B has SUPER's package after the commit",
    );
    off(b2);

    // Rollback to 1: PC-B boots without it.
    const rolled = api("POST", `/images/${imageId}/rollback`, { version: 1 });
    t.equal(rolled.status, 200, "rollback");
    t.equal(rolled.json.current_version, 1, "current version 1");
    const b3 = await boot("b");
    t.equal(
      await shell(b3, HAS_PACKAGE, PACKAGE_ANSWER, SHELL_TIMEOUT),
      "BF-PKG-NO-42",
      "PC-B boots version 1 after the rollback: no package",
    );
    off(b3);

    t.equal(await sha256(lab.golden), v1Sum, "version 1's file never changed");
  },
);
