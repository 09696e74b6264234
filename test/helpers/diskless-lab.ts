import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, statSync } from "node:fs";
import { join } from "node:path";
import { parseTgtStat } from "../../src/iscsi/target/tgt-stat.js";
import type { TargetIo } from "../../src/iscsi/target/types.js";
import type { FirmwareClient } from "./lan.js";
import { type LanRig, type LanRigOptions, startLanRig } from "./lan-rig.js";

export type { ApiReply } from "./lan-rig.js";

/**
 * The diskless rig the sanboot end-to-end tests share: the LAN rig (test/helpers/lan-rig.ts)
 * seeded with one golden image and machines with a sanboot target each.
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

export interface DisklessLabOptions extends Omit<LanRigOptions, "seed"> {
  /** Puts the golden image (version 1) at the given path, on the XFS. */
  writeGolden(path: string): Promise<void> | void;
  machines: Record<string, LabMachine>;
}

export interface DisklessLab extends LanRig {
  golden: string;
  imageId: number;
  /** By machine key: its ids, its target's IQN, initiator name and first CHAP secret. */
  ids: Record<
    string,
    { machine: number; target: number; iqn: string; initiator: string; chapPassword: string }
  >;
  /** An overlay's file, by machine key. */
  overlay(key: string): string;
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
  const ids: DisklessLab["ids"] = {};
  let golden = "";
  let imageId = 0;
  const rig = await startLanRig(t, {
    ...opts,
    async seed(store, data) {
      golden = join(data, "images", "golden-v1.raw");
      await opts.writeGolden(golden);
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
        const initiator = `${IQN_PREFIX}:client-${m.mac.replace(/:/g, "")}`;
        const chapPassword = `Secret${key.toUpperCase()}0123456`;
        const target = store.targets.create({
          name: `${m.name}-target`,
          iqn,
          portal_ip: `${opts.net}.1`,
          machine_id: machine.id,
          system_image_id: image.id,
          initiator_iqn: initiator,
          chap_username: `user-${key}`,
          chap_password: chapPassword,
        });
        ids[key] = { machine: machine.id, target: target.id, iqn, initiator, chapPassword };
      }
    },
  });

  return {
    ...rig,
    golden,
    imageId,
    ids,
    overlay: (key) => join(rig.data, "overlays", `t${ids[key]!.target}-system.img`),
    targetIo(key) {
      const iqn = ids[key]!.iqn;
      const shown = rig.tgtadm(["--op", "show", "--mode", "target"]);
      const tid = new RegExp(`^Target (\\d+): ${iqn.replace(/[.:]/g, "\\$&")}$`, "m").exec(
        shown,
      )?.[1];
      if (!tid) throw new Error(`no tgt target ${iqn}`);
      return parseTgtStat(rig.tgtadm(["--op", "stat", "--mode", "target", "--tid", tid]));
    },
    dropIscsiConnections: () =>
      rig.lan.exec("ss", ["-K", "-t", "state", "established", "( sport = :3260 )"]),
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
 * A Linux PC's login prompt on its serial console. The kernel writes its messages to the same
 * console: getty writes the host name and "login:" separately, and a kernel line can land in
 * between ("lab-pc-b [  116.31] SVM: ...\nlogin:"), which a plain "\nNAME login:" never matched.
 */
export function loginPrompt(name: string): RegExp {
  return new RegExp(`\\n${name} (?:\\[ *\\d+\\.\\d+\\][^\\n]*\\n)*login:`);
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
