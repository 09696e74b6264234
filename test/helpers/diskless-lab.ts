import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseTgtStat } from "../../src/iscsi/target/tgt-stat.js";
import type { TargetIo } from "../../src/iscsi/target/types.js";
import { Store } from "../../src/store/index.js";
import { mountLoopFs } from "../iscsi/overlay/loopfs.js";
import { type RunningDaemon, startDaemon, tempDir } from "./daemon.js";
import { type FirmwareClient, TestLan } from "./lan.js";

/**
 * The diskless rig the sanboot end-to-end tests share: a test LAN with the site's DHCP
 * server, a loop-mounted XFS (reflink) as the daemon's data folder holding one golden
 * image, tgtd in the LAN's namespace, machines with a sanboot target each, and bootfleetd
 * serving them (proxy-DHCP, TFTP, HTTP on :80). Everything is removed in teardown.
 */
type Teardown = { teardown(fn: () => void | Promise<void>): void };

export const IQN_PREFIX = "iqn.2024-01.io.bootfleet";

export interface LabMachine {
  name: string;
  mac: string;
  policy: "persistent" | "reset";
  /** A host name apart from the machine name (what iPXE puts in the iBFT). */
  hostname?: string;
}

export interface DisklessLabOptions {
  /** The namespace's name prefix (the pid is appended). */
  name: string;
  /** The first three octets of the LAN: the server is .1, the site's DHCP hands out .50-.99. */
  net: string;
  /** Size of the loop-mounted XFS. */
  fsBytes: number;
  /** Puts the golden image (version 1) at the given path, on the XFS. */
  writeGolden(path: string): Promise<void> | void;
  machines: Record<string, LabMachine>;
  /** More daemon environment (e.g. BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE). */
  env?: Record<string, string>;
  /** Bound on the daemon's start (it applies every target before it says ready). */
  daemonTimeoutMs?: number;
}

export interface ApiReply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON from the API, read by the tests
  json: any;
}

export interface DisklessLab {
  lan: TestLan;
  /** The daemon's data folder (on the XFS). */
  data: string;
  server: string;
  golden: string;
  imageId: number;
  ids: Record<string, { machine: number; target: number; iqn: string }>;
  tgtd: ChildProcess;
  daemon: RunningDaemon;
  /** An overlay's file, by machine key. */
  overlay(key: string): string;
  /** The REST API as admin, from inside the namespace; the token goes to curl on stdin. */
  api(method: string, path: string, body?: unknown): ApiReply;
  /** The completed I/O of a machine's target, from tgtd's per-session counters. */
  targetIo(key: string): TargetIo;
  /**
   * Closes every iSCSI connection on the target's side: what a PC's logout at shutdown
   * does, for a killed QEMU whose half-open connection tgtd would keep for hours.
   */
  dropIscsiConnections(): void;
}

export async function startDisklessLab(
  t: Teardown,
  opts: DisklessLabOptions,
): Promise<DisklessLab> {
  const server = `${opts.net}.1`;
  const lan = TestLan.create(t, opts.name, [
    { bridge: "br0", address: server, dhcpRange: [`${opts.net}.50`, `${opts.net}.99`] },
  ]);
  const fs = await mountLoopFs("xfs-reflink", opts.fsBytes, opts.name);
  t.teardown(() => fs.cleanup());
  const data = fs.dir;
  const confDir = tempDir(t, "bf-tgt-conf-");

  mkdirSync(join(data, "images"), { recursive: true });
  const golden = join(data, "images", "golden-v1.raw");
  await opts.writeGolden(golden);

  const ids: DisklessLab["ids"] = {};
  const store = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000 });
  let imageId: number;
  try {
    const image = store.images.create({
      name: "Golden",
      filename: "golden.raw",
      status: "ready",
      format: "raw",
    });
    imageId = image.id;
    store.images.addVersion(image.id, { path: golden, size_bytes: fileSize(golden), note: "v1" });
    for (const [key, m] of Object.entries(opts.machines)) {
      const machine = store.machines.create({
        name: m.name,
        mac_address: m.mac,
        status: "active",
        boot_action: "sanboot",
        overlay_policy: m.policy,
        ...(m.hostname ? { hostname: m.hostname } : {}),
      });
      const iqn = `${IQN_PREFIX}:${m.name}`;
      const target = store.targets.create({
        name: `${m.name}-target`,
        iqn,
        portal_ip: server,
        machine_id: machine.id,
        system_image_id: image.id,
        initiator_iqn: `${IQN_PREFIX}:client-${m.mac.replace(/:/g, "")}`,
        chap_username: `user-${key}`,
        chap_password: `Secret${key.toUpperCase()}0123456`,
      });
      ids[key] = { machine: machine.id, target: target.id, iqn };
    }
  } finally {
    store.close();
  }

  lan.startSiteDhcp(lan.subnets[0]!);
  // A control port of this test's own: tgtd's default would collide with other tests.
  const control = 20_000 + ((process.pid + opts.net.length * 977) % 10_000);
  const tgtadm = (args: string[]) => lan.exec("tgtadm", ["-C", String(control), ...args]);
  const tgtd = lan.spawn("tgtd", ["-f", "-C", String(control), "--iscsi", `portal=${server}:3260`]);
  t.teardown(() => {
    try {
      tgtadm(["--op", "delete", "--mode", "system"]);
    } catch {
      // killed with the namespace's processes
    }
  });
  for (let i = 0; ; i++) {
    try {
      tgtadm(["--op", "show", "--mode", "sys"]);
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const daemon = await startDaemon(t, {
    wrapper: lan.wrapper,
    // A bound, not a timing: applying the targets takes long on a loaded 2-core host.
    timeoutMs: opts.daemonTimeoutMs ?? 240_000,
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
      ...opts.env,
    },
  });

  const password = readFileSync(join(data, "initial-admin-password"), "utf8").trim();
  const curl = (method: string, path: string, body?: unknown, token?: string): ApiReply => {
    const config = token ? `header = "Authorization: Bearer ${token}"\n` : "";
    const out = lan.exec(
      "curl",
      [
        "-sS",
        "-K",
        "-",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        ...(body === undefined ? [] : ["--data-binary", JSON.stringify(body)]),
        "-w",
        "\n%{http_code}",
        `http://${server}/api${path}`,
      ],
      { input: config },
    );
    const nl = out.lastIndexOf("\n");
    const text = out.slice(0, nl);
    return { status: Number(out.slice(nl + 1)), json: text ? JSON.parse(text) : undefined };
  };
  const login = curl("POST", "/auth/login", { username: "admin", password });
  if (login.status !== 200) throw new Error(`admin login failed: ${JSON.stringify(login.json)}`);
  const token = login.json.access_token as string;

  return {
    lan,
    data,
    server,
    golden,
    imageId,
    ids,
    tgtd,
    daemon,
    overlay: (key) => join(data, "overlays", `t${ids[key]!.target}-system.img`),
    api: (method, path, body) => curl(method, path, body, token),
    targetIo(key) {
      const iqn = ids[key]!.iqn;
      const shown = tgtadm(["--op", "show", "--mode", "target"]);
      const tid = new RegExp(`^Target (\\d+): ${iqn.replace(/[.:]/g, "\\$&")}$`, "m").exec(
        shown,
      )?.[1];
      if (!tid) throw new Error(`no tgt target ${iqn}`);
      return parseTgtStat(tgtadm(["--op", "stat", "--mode", "target", "--tid", tid]));
    },
    dropIscsiConnections: () =>
      lan.exec("ss", ["-K", "-t", "state", "established", "( sport = :3260 )"]),
  };
}

function fileSize(path: string): number {
  return statSync(path).size;
}

/** A file's sha256, streamed (golden images are gigabytes). */
export function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

/** A sparse copy (the image cache is on another file system, so no reflink). */
export function copySparse(from: string, to: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cp = spawn("cp", ["--sparse=always", from, to], { stdio: "inherit" });
    cp.once("error", reject);
    cp.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`cp exit ${code}`))));
  });
}

/**
 * Runs a command at the root shell of a booted Debian PC (autologin on ttyS0) and waits
 * for its marker. The marker should be computed by the shell ($((...))), so the echo of
 * the typed line never matches it.
 */
export async function shell(
  pc: FirmwareClient,
  command: string,
  marker: RegExp,
  timeoutMs: number,
): Promise<string> {
  // Keys typed before the shell runs are flushed by getty and login: wait for its prompt.
  await pc.waitFor(/root@[a-z0-9-]+:~# /, timeoutMs);
  await pc.type(`${command}\r`);
  return (await pc.waitFor(marker, timeoutMs))[0];
}
