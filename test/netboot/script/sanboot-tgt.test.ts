// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax
// The sanboot script on real iPXE against a real iSCSI target (tgtd): hostile CHAP
// credentials must reach the target byte for byte, and the disk must boot.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import t, { type Test } from "tap";
import type { SanbootData } from "../../../src/netboot/script/kinds.js";
import { loadTemplates, renderScript } from "../../../src/netboot/script/render.js";
import { qemuSkipReason, runIpxe, writeMarkerDisk } from "./fixtures/qemu-ipxe.js";

const run = promisify(execFile);
const IPXE_DIR = join(import.meta.dirname, "../../../ipxe");
const GUEST_HTTP = "http://10.0.2.100:8080";
const TGTD = "/usr/sbin/tgtd";

const skip =
  process.getuid?.() !== 0
    ? "needs root: runs tgtd (iSCSI target)"
    : qemuSkipReason() || (existsSync(TGTD) ? false : "needs tgt (Debian package)");

const TARGET = `iqn.2024-01.lan.bootfleet.test:script-${process.pid}`;
const INITIATOR = `iqn.2024-01.lan.bootfleet.test:pc-${process.pid}`;
// Everything a store could hold that means something to the iPXE shell.
const CHAP_USER = "pc 01 && ${password} #x";
const CHAP_PASS = "S3cr3t ${x} || ;#\u00fc!";
const MUTUAL_USER = "target; reboot";
const MUTUAL_PASS = "Mutual || ${y} #2";

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1", () => {
      const p = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(p));
    });
  });
}

async function startTgtd(t: Test, disk: string): Promise<number> {
  const portal = await freePort();
  // Control channel of our own tgtd (its socket path is shared by all tgtd instances).
  // tgtadm accepts -C values up to 32767.
  const control = 20000 + (process.pid % 12000);
  const tgtadm = (...args: string[]) =>
    run("tgtadm", ["-C", String(control), "--lld", "iscsi", ...args]);
  const child: ChildProcess = spawn(
    TGTD,
    ["-f", "-C", String(control), "--iscsi", `portal=127.0.0.1:${portal}`],
    {
      stdio: "ignore",
    },
  );
  t.teardown(async () => {
    // tgtd ignores SIGTERM while targets exist; it is ours, end it by pid.
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await rm(`/var/run/tgtd/socket.${control}`, { force: true });
    await rm(`/var/run/tgtd/socket.${control}.lock`, { force: true });
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await tgtadm("--op", "show", "--mode", "target");
      break;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", TARGET);
  await tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", disk);
  await tgtadm("--op", "new", "--mode", "account", "--user", CHAP_USER, "--password", CHAP_PASS);
  await tgtadm("--op", "bind", "--mode", "account", "--tid", "1", "--user", CHAP_USER);
  await tgtadm(
    "--op",
    "new",
    "--mode",
    "account",
    "--user",
    MUTUAL_USER,
    "--password",
    MUTUAL_PASS,
  );
  await tgtadm(
    "--op",
    "bind",
    "--mode",
    "account",
    "--tid",
    "1",
    "--user",
    MUTUAL_USER,
    "--outgoing",
  );
  await tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", INITIATOR);
  return portal;
}

t.test("sanboot with CHAP and mutual CHAP boots a tgtd disk on real iPXE", { skip }, async (t) => {
  const templates = await loadTemplates(IPXE_DIR);
  const dir = await mkdtemp(join(tmpdir(), `bf-script-${process.pid}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const disk = join(dir, "system.img");
  await writeMarkerDisk(disk, "ISCSI-DISK-BOOTED");
  const portal = await startTgtd(t, disk);

  const data = (password: string, mutualPassword: string): SanbootData => ({
    name: "pc-01",
    initiatorIqn: INITIATOR,
    chap: { username: CHAP_USER, password },
    mutualChap: { username: MUTUAL_USER, password: mutualPassword },
    // tgt's LUN 0 is its controller; the disk is LUN 1.
    system: { server: "10.0.2.100", port: 3260, lun: 1, targetIqn: TARGET },
    retryTimeoutMs: 1000,
  });
  let password = CHAP_PASS;
  let mutualPassword = MUTUAL_PASS;
  const server = createServer((_req, res) =>
    res.end(renderScript(templates, "sanboot", data(password, mutualPassword))),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const httpPort = (server.address() as AddressInfo).port;
  const forwards = [
    { guestPort: 8080, hostPort: httpPort },
    { guestPort: 3260, hostPort: portal },
  ];
  const bootstrap = `#!ipxe\ndhcp\nchain ${GUEST_HTTP}/boot\n`;

  // Controls: with one wrong byte in either secret the login fails (the target refuses us,
  // or iPXE refuses the target), so the boot below shows that both exact secrets arrived.
  for (const [what, pass, mutual] of [
    ["initiator secret", `${CHAP_PASS.slice(0, -1)}?`, MUTUAL_PASS],
    ["mutual secret", CHAP_PASS, `${MUTUAL_PASS.slice(0, -1)}?`],
  ] as const) {
    password = pass;
    mutualPassword = mutual;
    const refused = await runIpxe(t, {
      script: bootstrap,
      until: /could not boot from iSCSI target|ISCSI-DISK-BOOTED/,
      timeoutMs: 90_000,
      forwards,
    });
    t.match(refused.serial, /could not boot from iSCSI target/, `a wrong ${what} fails the login`, {
      serial: refused.serial.slice(-2000),
    });
    t.notMatch(refused.serial, /ISCSI-DISK-BOOTED/, `no boot with a wrong ${what}`);
  }

  password = CHAP_PASS;
  mutualPassword = MUTUAL_PASS;
  const booted = await runIpxe(t, {
    script: bootstrap,
    until: /ISCSI-DISK-BOOTED/,
    timeoutMs: 90_000,
    forwards,
  });
  t.ok(booted.matched, "the iSCSI disk's boot sector ran", { serial: booted.serial.slice(-2000) });
  t.match(booted.serial, /Booting from SAN device 0x80/, "booted as drive 0x80");
  t.notOk(booted.serial.includes("S3cr3t"), "the secret is never printed");
});
