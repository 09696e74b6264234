import { createSocket } from "node:dgram";
import {
  accessSync,
  constants,
  copyFileSync,
  existsSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { checkReserve } from "../diskspace/reserve.js";
import type { CheckResult } from "./check.js";
import { checkRogueProxyDhcp } from "./doctor-dhcp.js";

/**
 * `bootfleet doctor`: what breaks a deployment, each check a small function saying what
 * it saw and what to do about it.
 */
export type { CheckResult };

export interface DoctorInputs {
  ports: { port: number; proto: "tcp" | "udp"; what: string }[];
  overlaysDir: string;
  reservePercent: number;
  ipxeFiles: string[];
  interfaces: string[];
  /**
   * Send a PXE DISCOVER on each interface and listen this long for another proxy-DHCP
   * (when bootfleet's proxy-DHCP is on); 0 or absent skips the check.
   */
  dhcpProbeMs?: number;
  /** Where /sys is (tests point it elsewhere). */
  sys?: string;
  iscsiDriver?: string;
  overlayDriver?: string;
}

const ok = (name: string, detail: string): CheckResult => ({ name, status: "ok", detail });

export async function checkPort(p: DoctorInputs["ports"][number]): Promise<CheckResult> {
  const name = `port ${p.port}/${p.proto} (${p.what})`;
  const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    if (p.proto === "tcp") {
      const s = createServer();
      s.once("error", resolve);
      s.listen({ port: p.port, exclusive: true }, () => s.close(() => resolve(undefined)));
    } else {
      const s = createSocket({ type: "udp4", reuseAddr: false });
      s.once("error", (e) => {
        s.close();
        resolve(e);
      });
      s.bind(p.port, () => s.close(() => resolve(undefined)));
    }
  });
  if (!err) return ok(name, "free");
  if (err.code === "EACCES") {
    return {
      name,
      status: "warn",
      detail: "cannot test: needs root",
      fix: "run bootfleet doctor as root",
    };
  }
  return {
    name,
    status: "fail",
    detail: `in use (${err.code})`,
    fix: `find the owner with \`ss -lpn 'sport = :${p.port}'\` and stop it (another DHCP/TFTP/web/iSCSI server), or stop bootfleetd first if it is the owner`,
  };
}

export async function checkReserveSpace(dir: string, percent: number): Promise<CheckResult> {
  const name = "free space against the reserve";
  if (!existsSync(dir))
    return {
      name,
      status: "warn",
      detail: `${dir} does not exist yet`,
      fix: "start bootfleetd once to create it",
    };
  const r = await checkReserve(dir, percent);
  if (r.ok)
    return ok(
      name,
      `${(r.free_bytes / 1024 ** 3).toFixed(1)} GiB free, reserve ${(r.reserve_bytes / 1024 ** 3).toFixed(1)} GiB`,
    );
  return {
    name,
    status: "fail",
    detail: r.reason ?? "below the reserve",
    fix: "free space (delete old images or overlays: bootfleet storage cleanup via the API) or lower [storage] reserve_percent",
  };
}

export function checkIpxe(files: string[]): CheckResult {
  const name = "iPXE binaries";
  const missing = files.filter((f) => {
    try {
      accessSync(f, constants.R_OK);
      return false;
    } catch {
      return true;
    }
  });
  if (!missing.length) return ok(name, files.join(", "));
  return {
    name,
    status: "fail",
    detail: `missing or unreadable: ${missing.join(", ")}`,
    fix: "apt install ipxe (or set [tftp] ipxe_bios / ipxe_efi_x64 to where the files are)",
  };
}

/** A reflink copy (FICLONE) of a small file in the overlays folder. */
export function checkReflink(dir: string): CheckResult {
  const name = "reflink on the overlay file system";
  if (!existsSync(dir))
    return {
      name,
      status: "warn",
      detail: `${dir} does not exist yet`,
      fix: "start bootfleetd once to create it",
    };
  const a = join(dir, `.doctor-${process.pid}-a`);
  const b = join(dir, `.doctor-${process.pid}-b`);
  try {
    writeFileSync(a, "bootfleet doctor\n");
    copyFileSync(a, b, constants.COPYFILE_FICLONE_FORCE);
    return ok(name, `${dir} supports reflinks`);
  } catch (err) {
    return {
      name,
      status: "fail",
      detail: `${dir}: no reflink (${(err as NodeJS.ErrnoException).code})`,
      fix: "put [iscsi] overlays_dir and images_dir on XFS (mkfs.xfs -m reflink=1) or Btrfs, or use the lvm-thin overlay driver",
    };
  } finally {
    rmSync(a, { force: true });
    rmSync(b, { force: true });
  }
}

export function checkLio(sys = "/sys"): CheckResult {
  const name = "LIO modules and configfs";
  const target = join(sys, "kernel/config/target");
  if (existsSync(target)) return ok(name, `${target} present`);
  const configfs = existsSync(join(sys, "kernel/config"));
  return {
    name,
    status: "warn",
    detail: configfs ? "configfs mounted but target_core_mod not loaded" : "configfs not mounted",
    fix: 'modprobe target_core_mod iscsi_target_mod (and mount -t configfs none /sys/kernel/config), or use the tgt driver ([iscsi] target_driver = "tgt")',
  };
}

/**
 * Which overlay driver the daemon takes and why, by the rule of `[iscsi] overlay_driver =
 * "auto"` (iscsi/overlay/select.ts): dm-snapshot, whose machines share the image's page
 * cache, with LIO where the kernel has device-mapper snapshots and loop devices.
 */
export function checkOverlayDriver(
  overlayDriver = "auto",
  iscsiDriver = "auto",
  sys = "/sys",
): CheckResult {
  const name = "overlay driver";
  const missing = [
    ["dm_mod", "device-mapper"],
    ["dm_snapshot", "dm-snapshot"],
    ["loop", "loop devices"],
  ]
    .filter(([mod]) => !existsSync(join(sys, "module", mod!)))
    .map(([, what]) => what!);
  const fix = "modprobe dm_snapshot loop (the package lists them in /usr/lib/modules-load.d/)";
  if (overlayDriver === "dm-snapshot") {
    if (missing.length === 0) return ok(name, "dm-snapshot (configured): the kernel has it");
    return {
      name,
      status: "fail",
      detail: `dm-snapshot (configured), but the kernel lacks ${missing.join(", ")}`,
      fix,
    };
  }
  if (overlayDriver !== "auto") return ok(name, `${overlayDriver} (configured)`);
  const lio = iscsiDriver !== "tgt" && existsSync(join(sys, "kernel/config/target"));
  if (!lio) {
    return ok(
      name,
      `reflink (auto): the target driver is tgt, which caches each block device itself; dm-snapshot overlays (a shared page cache) need LIO`,
    );
  }
  if (missing.length === 0) {
    return ok(
      name,
      "dm-snapshot (auto): LIO with device-mapper snapshots and loop devices, so every machine shares the image's page cache",
    );
  }
  return {
    name,
    status: "warn",
    detail: `reflink (auto): the kernel lacks ${missing.join(", ")}, so each machine's clone reads and caches the image on its own`,
    fix,
  };
}

export function checkLinkSpeed(ifname: string, sys = "/sys"): CheckResult {
  const name = `link speed of ${ifname}`;
  let speed: number;
  try {
    speed = Number(readFileSync(join(sys, "class/net", ifname, "speed"), "utf8").trim());
  } catch {
    return {
      name,
      status: "warn",
      detail: "unknown (no speed in sysfs: virtual NIC or link down)",
      fix: `check the cable and \`ethtool ${ifname}\``,
    };
  }
  if (!(speed > 0)) {
    return {
      name,
      status: "warn",
      detail: `unknown (the driver reports ${speed}: a virtual NIC, or the link is down)`,
      fix: `check the cable and \`ethtool ${ifname}\``,
    };
  }
  if (speed >= 10_000) return ok(name, `${speed} Mb/s`);
  if (speed >= 1000)
    return {
      name,
      status: "warn",
      detail: `${speed} Mb/s`,
      fix: "1 Gb/s serves a few PCs booting at once; use 10 Gb/s for a room",
    };
  return {
    name,
    status: "fail",
    detail: `${speed} Mb/s`,
    fix: "a diskless room needs at least 1 Gb/s to the server: check the cable, switch port and `ethtool`",
  };
}

/** The block device under a folder, by its st_dev major:minor through /sys/dev/block. */
export function checkSsd(dir: string, sys = "/sys"): CheckResult {
  const name = "image disk is an SSD";
  try {
    const dev = statSync(dir).dev;
    const major = Math.floor(dev / 256) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    let node = realpathSync(join(sys, "dev/block", `${major}:${minor}`));
    // A partition's queue is its parent disk's.
    if (!existsSync(join(node, "queue"))) node = join(node, "..");
    const rotational = readFileSync(join(node, "queue/rotational"), "utf8").trim();
    if (rotational === "0") return ok(name, `${node.split("/").pop()} is not rotational`);
    return {
      name,
      status: "warn",
      detail: `${node.split("/").pop()} is a rotating disk`,
      fix: "many PCs reading one image at once want an SSD or NVMe for images_dir",
    };
  } catch {
    return {
      name,
      status: "warn",
      detail: `cannot tell the disk under ${dir} (tmpfs, overlay or a device-mapper stack)`,
      fix: "check with lsblk -d -o name,rota",
    };
  }
}

export async function runDoctor(inp: DoctorInputs): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  if (inp.iscsiDriver !== "tgt") results.push(checkLio(inp.sys));
  for (const p of inp.ports) results.push(await checkPort(p));
  const overlay = checkOverlayDriver(inp.overlayDriver, inp.iscsiDriver, inp.sys);
  results.push(overlay);
  // Reflink matters only where reflink clones are the overlays in use.
  if (overlay.detail.startsWith("reflink")) results.push(checkReflink(inp.overlaysDir));
  results.push(await checkReserveSpace(inp.overlaysDir, inp.reservePercent));
  results.push(checkIpxe(inp.ipxeFiles));
  for (const i of inp.interfaces) results.push(checkLinkSpeed(i, inp.sys));
  if (inp.dhcpProbeMs) {
    for (const i of inp.interfaces) {
      results.push(await checkRogueProxyDhcp(i, { listenMs: inp.dhcpProbeMs }));
    }
  }
  results.push(checkSsd(inp.overlaysDir, inp.sys));
  return results;
}
