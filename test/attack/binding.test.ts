import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { writeBootSector } from "../helpers/boot-lan.js";
import { REPO } from "../helpers/daemon.js";
import { startDisklessLab } from "../helpers/diskless-lab.js";
import { readAt } from "../helpers/file-at.js";
import type { Forge } from "./forge-dhcp.js";

// The boot binding, attacked from the LAN with real packets: a second host in a network
// namespace of its own (own MAC, own IP) forges proxy-DHCP requests naming other machines
// and fetches the script URLs it is handed. A machine's script, with its CHAP secret, must
// reach that machine only; a URL works once; the secret changes at every verified boot
// without dropping a logged-in session; and the forged requests must not reset a
// reset-on-reboot machine's disk under it. The victim is a real BIOS PC (QEMU, iPXE ROM)
// sanbooting through tgtd, as in test/e2e/sanboot.test.ts.
const skip =
  process.getuid?.() === 0 ? false : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU";
const BOOT_TIMEOUT = 150_000;
const SERVER = "10.99.0.1";

const WRITTEN = "WRITTEN-BY-BOOT";

/** Runs a command in a host's namespace; never throws (the exit code is returned). */
function inHost(host: string, cmd: string, args: string[]): { code: number; out: string } {
  try {
    const out = execFileSync("ip", ["netns", "exec", host, cmd, ...args], {
      encoding: "utf8",
      cwd: REPO,
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
    });
    return { code: 0, out };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { code: e.status ?? -1, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

/** A PXE request from a host (forge-dhcp.ts); the boot file of the answer, or null. */
function forge(host: string, f: Forge): string | null {
  const r = inHost(host, process.execPath, [
    "--import",
    "tsx",
    join(REPO, "test/attack/forge-dhcp.ts"),
    JSON.stringify(f),
  ]);
  if (r.code !== 0) throw new Error(`forge-dhcp failed: ${r.out}`);
  return (JSON.parse(r.out.trim().split("\n").at(-1)!) as { file: string | null }).file;
}

/** GET from a host: the status and the body. */
function fetchFrom(host: string, url: string): { status: string; body: string } {
  const r = inHost(host, "curl", ["-s", "-m", "60", "-w", "\n%{http_code}", url]);
  const at = r.out.lastIndexOf("\n");
  return { status: r.out.slice(at + 1).trim(), body: r.out.slice(0, at) };
}

/** A setting a sanboot script carries in iPXE's :hex form (the CHAP user, its secret). */
function scriptSetting(script: string, name: "username" | "password"): string | undefined {
  const m = new RegExp(`^set ${name}:hex ([0-9a-f:]+)$`, "m").exec(script);
  return m ? Buffer.from(m[1]!.replaceAll(":", ""), "hex").toString("latin1") : undefined;
}
const scriptSecret = (script: string) => scriptSetting(script, "password");

t.test("a LAN host cannot take another machine's boot", { skip }, async (t) => {
  // V: a real PC (QEMU), reset on reboot. W: a persistent machine played by a plain host
  // with W's MAC, for the checks that need no firmware. Both sanboot
  // test/e2e/sanboot.test.ts's boot sector: it prints FRESH or SEEN, then writes LBA 3.
  const V = { name: "lab-pc-v", mac: "52:54:00:bf:60:0a", policy: "reset" as const };
  const W = { name: "lab-pc-w", mac: "52:54:00:bf:60:0b", policy: "persistent" as const };
  const { lan, data, daemon, ids, tgtadm } = await startDisklessLab(t, {
    name: "bf-atk-bind",
    net: "10.99.0",
    fsBytes: 2 * 1024 ** 3,
    writeGolden: writeBootSector,
    // Keyed by name: each CHAP user is user-<machine name>.
    machines: { [V.name]: V, [W.name]: W },
    env: { BOOTFLEET_LOG_LEVEL: "debug" },
  });
  const row = (name: string) => {
    const s = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000, readonly: true });
    try {
      return s.targets.get(ids[name]!.target)!;
    } finally {
      s.close();
    }
  };

  /** The I_T nexus ids logged in to a target. */
  const nexuses = (iqn: string): string[] => {
    const out = tgtadm(["--op", "show", "--mode", "target"]);
    const block = out.split(/^Target \d+: /m).find((b) => b.startsWith(`${iqn}\n`)) ?? "";
    return [...block.matchAll(/I_T nexus: (\d+)/g)].map((m) => m[1]!);
  };

  const attacker = lan.addHost("br0", "10.99.0.66");
  const wHost = lan.addHost("br0", "10.99.0.21", W.mac);
  const children: ChildProcess[] = [];
  t.teardown(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  });
  /** A 4011 REQUEST naming `mac`, sent by `host` from `from` (its own address, as ciaddr). */
  const request4011 = (host: string, mac: string, from: string) => {
    const url = forge(host, {
      server: SERVER,
      port: 4011,
      mac,
      ciaddr: from,
      bind: { address: from, port: 68 },
    });
    if (!url?.startsWith(`http://${SERVER}`)) throw new Error(`no script URL: ${url}`);
    return url;
  };

  await t.test("a forged 4011 request does not hand the attacker a script", async (t) => {
    // As it stands before (a pass over machines that are off may have made its next boot's
    // secret ready since the start).
    const wSecret = row(W.name).chap_password;
    for (const m of [W, V]) {
      const url = request4011(attacker, m.mac, "10.99.0.66");
      const got = fetchFrom(attacker, url);
      t.equal(got.status, "403", `${m.name}: the attacker's fetch is refused`);
      t.notMatch(got.body, /password|initiator-iqn/, "and carries nothing of the machine's");
    }
    t.equal(row(W.name).chap_password, wSecret, "nothing was prepared for W");
    t.equal(row(V.name).overlay_reset_at, null, "V's disk was not reset");
    const refused = await daemon.waitForLog(
      (l) => l.msg === "boot script refused" && l.from === "10.99.0.66",
      10_000,
    );
    t.match(refused.reason, /is [0-9a-f:]{17}, not the machine/, "the log says why");
  });

  let wUrl = "";
  let s1 = "";
  /** The CHAP user of W's first boot (on tgt it alternates between two names: a spare). */
  let u1 = "";
  await t.test("the machine itself gets its script once per URL", async (t) => {
    wUrl = request4011(wHost, W.mac, "10.99.0.21");
    const first = fetchFrom(wHost, wUrl);
    t.equal(first.status, "200", "W's own fetch is served");
    s1 = scriptSecret(first.body) ?? "";
    u1 = scriptSetting(first.body, "username") ?? "";
    t.equal(s1.length, 16, "with its CHAP secret");
    t.equal(row(W.name).chap_username, u1, "and the user in force");
    t.not(s1, ids[W.name]!.chapPassword, "a new one for this boot");
    t.equal(row(W.name).chap_password, s1, "the one stored and applied");
    t.equal(fetchFrom(wHost, wUrl).status, "403", "the same URL a second time is refused");
    t.equal(fetchFrom(attacker, wUrl).status, "403", "and so is the attacker's replay of it");
  });

  await t.test("a new boot rotates the secret; a logged-in session stays up", async (t) => {
    const url = (secret: string, user = u1) =>
      `iscsi://${user}%${secret}@${SERVER}:3260/${ids[W.name]!.iqn}/1`;
    const perf = spawn(
      "ip",
      [
        "netns",
        "exec",
        wHost,
        "iscsi-perf",
        "-i",
        ids[W.name]!.initiator,
        "-t",
        "15",
        "-x",
        "0",
        url(s1),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    children.push(perf);
    let perfOut = "";
    const keep = (b: Buffer) => {
      perfOut = (perfOut + b.toString()).slice(-4000);
    };
    perf.stdout?.on("data", keep);
    perf.stderr?.on("data", keep);
    let before: string[] = [];
    for (const deadline = Date.now() + 20_000; before.length === 0 && Date.now() < deadline; ) {
      before = nexuses(ids[W.name]!.iqn);
      if (before.length === 0) await new Promise((r) => setTimeout(r, 200));
    }
    t.equal(before.length, 1, `W logged in with the first secret ${perfOut}`);

    const second = fetchFrom(wHost, request4011(wHost, W.mac, "10.99.0.21"));
    t.equal(second.status, "200", "W's next boot is served");
    const s2 = scriptSecret(second.body) ?? "";
    const u2 = scriptSetting(second.body, "username") ?? "";
    t.equal(s2.length, 16);
    t.equal(row(W.name).chap_username, u2, "the user in force stored");
    t.not(s2, s1, "with another secret");
    t.same(nexuses(ids[W.name]!.iqn), before, "the session logged in with the old one is up");

    const ended = /iops average \d+ \(\d+ MB\/s\)\s*$|finished/;
    for (const deadline = Date.now() + 40_000; !ended.test(perfOut) && Date.now() < deadline; ) {
      if (perf.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    t.match(perfOut, ended, "its reads ran their whole time");
    t.notMatch(perfOut, /error|fail|reconnect/i, "without an error or a reconnect");
    if (perf.exitCode === null) perf.kill("SIGKILL");
    const inq = (secret: string, user: string) =>
      inHost(wHost, "iscsi-inq", [`--initiator-name=${ids[W.name]!.initiator}`, url(secret, user)])
        .code;
    t.not(inq(s1, u1), 0, "a new login with the old secret fails");
    t.equal(inq(s2, u2), 0, "a new login with the new one works");
  });

  await t.test("the victim boots; forged requests do not reset its disk", async (t) => {
    const overlay = join(data, "overlays", `t${ids[V.name]!.target}-system.img`);
    const v1 = lan.startBiosClient({ bridge: "br0", mac: V.mac });
    t.teardown(() => v1.kill());
    await v1.waitFor(/DISKLESS-BOOT-OK FRESH[\s\S]*DISKLESS-WRITE-OK/, BOOT_TIMEOUT);
    const { chap_password: secret1, chap_username: user1 } = row(V.name);
    t.not(secret1, ids[V.name]!.chapPassword, "the victim's boot got a new secret");
    const resetAt = row(V.name).overlay_reset_at;
    t.ok(resetAt, "its verified boot reset its disk");
    const session = nexuses(ids[V.name]!.iqn);
    t.equal(session.length, 1, "V is logged in");

    for (let i = 0; i < 3; i++) {
      const url = request4011(attacker, V.mac, "10.99.0.66");
      t.equal(fetchFrom(attacker, url).status, "403", `forged request ${i + 1}: refused`);
    }
    t.same(nexuses(ids[V.name]!.iqn), session, "V's session was not dropped");
    t.equal(row(V.name).overlay_reset_at, resetAt, "V's disk was not reset");
    t.equal(readAt(overlay, 3 * 512, WRITTEN.length), WRITTEN, "what V wrote is still on its disk");
    t.equal(row(V.name).chap_password, secret1, "nor was its secret changed");

    // A reboot of V itself is a verified boot: a fresh disk and another secret.
    v1.kill();
    const v2 = lan.startBiosClient({ bridge: "br0", mac: V.mac });
    t.teardown(() => v2.kill());
    await v2.waitFor(/DISKLESS-BOOT-OK (FRESH|SEEN)/, BOOT_TIMEOUT);
    t.match(v2.serial(), /DISKLESS-BOOT-OK FRESH/, "V's reboot got a fresh disk");
    const secret2 = row(V.name).chap_password;
    t.not(secret2, secret1, "and a new CHAP secret");
    const stolen = inHost(attacker, "iscsi-inq", [
      `--initiator-name=${ids[V.name]!.initiator}`,
      `iscsi://${user1}%${secret1}@${SERVER}:3260/${ids[V.name]!.iqn}/1`,
    ]);
    t.not(stolen.code, 0, "the secret of V's first boot opens nothing now");
    v2.kill();
  });
});
