import { createHash } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import * as fsp from "node:fs/promises";
import { join, resolve } from "node:path";
import { ConfigfsIndex } from "./lio-index.js";
import { pluginOf, storageObjectName } from "./lio-saveconfig.js";
import type { LunSpec, TargetSession, TargetSpec } from "./types.js";

/**
 * The few file operations LIO's configfs is driven with. configfs creates a directory's
 * attribute files itself on mkdir and drops them on rmdir; tests hand in a temp folder
 * that behaves the same way.
 */
export interface ConfigFs {
  mkdir(path: string): Promise<void>;
  write(path: string, value: string): Promise<void>;
  read(path: string): Promise<string>;
  symlink(target: string, path: string): Promise<void>;
  readlink(path: string): Promise<string>;
  readdir(path: string): Promise<string[]>;
  rmdir(path: string): Promise<void>;
  unlink(path: string): Promise<void>;
  isDir(path: string): Promise<boolean>;
  isLink(path: string): Promise<boolean>;
}

export const nodeConfigFs: ConfigFs = {
  mkdir: (p) => fsp.mkdir(p),
  // configfs attributes exist once their directory does: never create, only write.
  // Write-only: configfs refuses a read-write open of an attribute that cannot be read
  // (a backstore's "control" is mode 0200) with EACCES, even for root.
  write: async (p, v) => {
    const fh = await fsp.open(p, fsConstants.O_WRONLY);
    try {
      await fh.write(v);
    } finally {
      await fh.close();
    }
  },
  read: (p) => fsp.readFile(p, "utf8"),
  symlink: (t, p) => fsp.symlink(t, p),
  readlink: (p) => fsp.readlink(p),
  readdir: (p) => fsp.readdir(p),
  rmdir: (p) => fsp.rmdir(p),
  unlink: (p) => fsp.unlink(p),
  isDir: (p) =>
    fsp.lstat(p).then(
      (s) => s.isDirectory(),
      () => false,
    ),
  isLink: (p) =>
    fsp.lstat(p).then(
      (s) => s.isSymbolicLink(),
      () => false,
    ),
};

const HBA_DIR = { fileio: "fileio", block: "iblock" } as const;
const TPG = "tpgt_1";

function linkName(seed: string): string {
  // rtslib names these links with 10 random hex digits; a hash keeps them stable.
  return createHash("sha1").update(seed).digest("hex").slice(0, 10);
}

/** Where this target's pieces live under a configfs root (/sys/kernel/config/target). */
class Paths {
  constructor(
    readonly root: string,
    readonly iqn: string,
  ) {}
  get fabric() {
    return join(this.root, "iscsi");
  }
  get target() {
    return join(this.fabric, this.iqn);
  }
  get tpg() {
    return join(this.target, TPG);
  }
  lun(n: number) {
    return join(this.tpg, "lun", `lun_${n}`);
  }
  acl(initiator: string) {
    return join(this.tpg, "acls", initiator);
  }
}

async function dirs(fs: ConfigFs, path: string): Promise<string[]> {
  const names = await fs.readdir(path).catch(() => [] as string[]);
  const out: string[] = [];
  for (const n of names) if (await fs.isDir(join(path, n))) out.push(n);
  return out;
}

async function links(fs: ConfigFs, path: string): Promise<string[]> {
  const names = await fs.readdir(path).catch(() => [] as string[]);
  const out: string[] = [];
  for (const n of names) if (await fs.isLink(join(path, n))) out.push(n);
  return out;
}

async function readTrim(fs: ConfigFs, path: string): Promise<string | undefined> {
  return fs.read(path).then(
    (v) => v.trim(),
    () => undefined,
  );
}

async function createStorageObject(
  fs: ConfigFs,
  root: string,
  index: ConfigfsIndex,
  iqn: string,
  l: LunSpec,
): Promise<string> {
  const plugin = pluginOf(l.kind);
  const hba = join(root, "core", `${HBA_DIR[plugin]}_${index.freeHbaIndex()}`);
  const so = join(hba, storageObjectName(iqn, l.lun));
  await fs.mkdir(hba);
  index.hbaAdded(hba);
  await fs.mkdir(so);
  index.objectAdded(so);
  // Same order as rtslib's FileIOStorageObject/BlockStorageObject._configure: the device
  // through `control`, then `enable`, and the unit serial only once the device is enabled.
  if (plugin === "fileio") {
    await fs.write(join(so, "control"), `fd_dev_name=${l.path},fd_dev_size=${l.sizeBytes}`);
    await fs.write(join(so, "attrib", "emulate_write_cache"), "1");
    await fs.write(join(so, "control"), "fd_buffered_io=1");
    await fs.write(join(so, "udev_path"), l.path);
  } else {
    await fs.write(join(so, "udev_path"), l.path);
    await fs.write(join(so, "control"), `udev_path=${l.path}`);
    await fs.write(join(so, "control"), `readonly=${l.readOnly ? 1 : 0}`);
  }
  await fs.write(join(so, "enable"), "1");
  await fs.write(join(so, "wwn", "vpd_unit_serial"), l.wwn);
  // Thin provisioning (client TRIM) only where the device can discard: enabling read it
  // into max_unmap_block_desc_count (fileio: hole punching; a thin LV: yes; a dm-snapshot:
  // no), and the kernel refuses emulate_tpu=1 without it (ENOSYS), failing the target.
  const unmap = Number((await readTrim(fs, join(so, "attrib", "max_unmap_block_desc_count"))) ?? 0);
  if (unmap > 0) await fs.write(join(so, "attrib", "emulate_tpu"), "1");
  return so;
}

async function removeStorageObject(
  fs: ConfigFs,
  index: ConfigfsIndex,
  soPath: string,
): Promise<void> {
  await fs.rmdir(soPath);
  index.objectRemoved(soPath, false);
  const hba = join(soPath, "..");
  // The HBA was made for this object alone; another object in it keeps it.
  if ((await dirs(fs, hba)).length === 0) {
    await fs.rmdir(hba);
    index.objectRemoved(soPath, true);
  }
}

/**
 * Which storage object directory a LUN (or mapped LUN) directory links to, as an absolute
 * path. The kernel reports configfs links relative to their folder
 * ("../../../../../../target/core/fileio_0/x") whatever path made them: compared as read,
 * every re-apply (a daemon restart, a target restored at boot) took them for links
 * elsewhere and unmapped the live LUN.
 */
async function lunTarget(fs: ConfigFs, lunDir: string): Promise<string | undefined> {
  const [l] = await links(fs, lunDir);
  return l === undefined ? undefined : resolve(lunDir, await fs.readlink(join(lunDir, l)));
}

async function removeMappedLun(fs: ConfigFs, mlunDir: string): Promise<void> {
  for (const l of await links(fs, mlunDir)) await fs.unlink(join(mlunDir, l));
  await fs.rmdir(mlunDir);
}

async function removeTpgLun(
  fs: ConfigFs,
  index: ConfigfsIndex,
  p: Paths,
  lunDirName: string,
): Promise<void> {
  // A mapped LUN pins its TPG LUN: drop the mappings first, never the ACL itself
  // (removing an ACL logs its initiator out).
  for (const acl of await dirs(fs, join(p.tpg, "acls"))) {
    for (const m of await dirs(fs, join(p.tpg, "acls", acl))) {
      if (!m.startsWith("lun_")) continue;
      const target = await lunTarget(fs, join(p.tpg, "acls", acl, m));
      if (target === join(p.tpg, "lun", lunDirName))
        await removeMappedLun(fs, join(p.tpg, "acls", acl, m));
    }
  }
  const dir = join(p.tpg, "lun", lunDirName);
  for (const l of await links(fs, dir)) await fs.unlink(join(dir, l));
  index.lunUnlinked(dir);
  await fs.rmdir(dir);
}

async function removeAcl(fs: ConfigFs, aclDir: string): Promise<void> {
  for (const m of await dirs(fs, aclDir))
    if (m.startsWith("lun_")) await removeMappedLun(fs, join(aclDir, m));
  await fs.rmdir(aclDir);
}

async function writeIfDiffers(
  fs: ConfigFs,
  path: string,
  value: string,
  changes: string[],
  what: string,
): Promise<void> {
  const current = await readTrim(fs, path);
  // An unset CHAP attribute reads back empty or as NULL.
  if (current === value || (value === "NULL" && current === "")) return;
  await fs.write(path, value);
  changes.push(what);
}

/**
 * Makes one target in configfs match the spec, touching nothing of any other target.
 * Never `targetctl restore` or `clear_existing`: those drop every logged-in machine.
 * Returns a description of what changed (no secrets), empty when nothing did.
 */
export async function applyToConfigfs(
  fs: ConfigFs,
  root: string,
  spec: TargetSpec,
  index = new ConfigfsIndex(fs, root),
): Promise<string[]> {
  try {
    await index.sync();
    return await applyIndexed(fs, root, spec, index);
  } catch (err) {
    index.invalidate();
    throw err;
  }
}

async function applyIndexed(
  fs: ConfigFs,
  root: string,
  spec: TargetSpec,
  index: ConfigfsIndex,
): Promise<string[]> {
  const p = new Paths(root, spec.iqn);
  const changes: string[] = [];
  const previousObjects = await targetStorageObjects(fs, p);

  // 1. Backstores.
  const soPath = new Map<number, string>();
  for (const l of spec.luns) {
    const name = storageObjectName(spec.iqn, l.lun);
    let so = index.findObject(HBA_DIR[pluginOf(l.kind)], name);
    if (so) {
      const dev = await readTrim(fs, join(so, "udev_path"));
      if (dev !== l.path) {
        // The LUN now points elsewhere: unexport the old object before it can go.
        for (const d of await dirs(fs, join(p.tpg, "lun")))
          if ((await lunTarget(fs, join(p.tpg, "lun", d))) === so)
            await removeTpgLun(fs, index, p, d);
        await removeStorageObject(fs, index, so);
        so = undefined;
      } else {
        // Read back as "T10 VPD Unit Serial Number: <serial>".
        const serial = (await readTrim(fs, join(so, "wwn", "vpd_unit_serial")))?.replace(
          /^T10 VPD Unit Serial Number:\s*/,
          "",
        );
        if (serial !== l.wwn) {
          await fs.write(join(so, "wwn", "vpd_unit_serial"), l.wwn);
          changes.push(`wwn of lun ${l.lun}`);
        }
      }
    }
    if (!so) {
      so = await createStorageObject(fs, root, index, spec.iqn, l);
      changes.push(`backstore for lun ${l.lun}`);
    }
    soPath.set(l.lun, so);
  }

  // 2. Target and its one TPG.
  if (!(await fs.isDir(p.fabric))) {
    await fs.mkdir(p.fabric);
    index.fabricAdded();
  }
  if (!(await fs.isDir(p.target))) {
    await fs.mkdir(p.target);
    index.targetAdded(spec.iqn);
    changes.push("target");
  }
  if (!(await fs.isDir(p.tpg))) await fs.mkdir(p.tpg);
  // Closed before anything is exported: no demo mode, CHAP required.
  await writeIfDiffers(
    fs,
    join(p.tpg, "attrib", "authentication"),
    "1",
    changes,
    "authentication=1",
  );
  await writeIfDiffers(
    fs,
    join(p.tpg, "attrib", "generate_node_acls"),
    "0",
    changes,
    "generate_node_acls=0",
  );
  await writeIfDiffers(
    fs,
    join(p.tpg, "attrib", "cache_dynamic_acls"),
    "0",
    changes,
    "cache_dynamic_acls=0",
  );
  await writeIfDiffers(
    fs,
    join(p.tpg, "attrib", "demo_mode_write_protect"),
    "1",
    changes,
    "demo_mode_write_protect=1",
  );
  await writeIfDiffers(fs, join(p.tpg, "param", "AuthMethod"), "CHAP", changes, "AuthMethod=CHAP");

  // 3. Portal.
  const host = spec.portal.address.includes(":") ? `[${spec.portal.address}]` : spec.portal.address;
  const np = `${host}:${spec.portal.port}`;
  for (const d of await dirs(fs, join(p.tpg, "np"))) {
    if (d !== np) {
      await fs.rmdir(join(p.tpg, "np", d));
      changes.push(`portal ${d} removed`);
    }
  }
  if (!(await fs.isDir(join(p.tpg, "np", np)))) {
    await fs.mkdir(join(p.tpg, "np", np));
    changes.push(`portal ${np}`);
  }

  // 4. TPG LUNs: drop the ones not wanted (or pointing elsewhere), add the missing ones.
  const wanted = new Map(spec.luns.map((l) => [`lun_${l.lun}`, l]));
  for (const d of await dirs(fs, join(p.tpg, "lun"))) {
    const l = wanted.get(d);
    const target = await lunTarget(fs, join(p.tpg, "lun", d));
    if (!l || target !== soPath.get(l.lun)) {
      await removeTpgLun(fs, index, p, d);
      changes.push(`${d} removed`);
    }
  }
  for (const l of spec.luns) {
    const dir = p.lun(l.lun);
    if (await fs.isDir(dir)) continue;
    const so = soPath.get(l.lun) ?? "";
    await fs.mkdir(dir);
    await fs.symlink(so, join(dir, linkName(so)));
    index.lunLinked(dir, so);
    changes.push(`lun_${l.lun}`);
  }

  // 5. The one ACL. Another initiator's ACL goes (that initiator is no longer this machine).
  const want = spec.acl.initiatorIqn;
  for (const a of await dirs(fs, join(p.tpg, "acls"))) {
    if (a !== want) {
      await removeAcl(fs, join(p.tpg, "acls", a));
      changes.push(`acl ${a} removed`);
    }
  }
  const acl = p.acl(want);
  if (!(await fs.isDir(acl))) {
    await fs.mkdir(acl);
    changes.push(`acl ${want}`);
  }
  // Written in place: a live session keeps going with the credentials it logged in with.
  await writeIfDiffers(fs, join(acl, "auth", "userid"), spec.acl.chapUser, changes, "chap user");
  await writeIfDiffers(
    fs,
    join(acl, "auth", "password"),
    spec.acl.chapPassword,
    changes,
    "chap password",
  );
  const mutual = Boolean(spec.acl.mutualUser && spec.acl.mutualPassword);
  // The kernel takes the string NULL to clear a CHAP attribute.
  await writeIfDiffers(
    fs,
    join(acl, "auth", "userid_mutual"),
    mutual ? (spec.acl.mutualUser ?? "") : "NULL",
    changes,
    "mutual user",
  );
  await writeIfDiffers(
    fs,
    join(acl, "auth", "password_mutual"),
    mutual ? (spec.acl.mutualPassword ?? "") : "NULL",
    changes,
    "mutual password",
  );

  for (const m of await dirs(fs, acl)) {
    if (!m.startsWith("lun_")) continue;
    const l = wanted.get(m);
    const target = await lunTarget(fs, join(acl, m));
    if (!l || target !== p.lun(l.lun)) {
      await removeMappedLun(fs, join(acl, m));
      changes.push(`mapped ${m} removed`);
    }
  }
  for (const l of spec.luns) {
    const m = join(acl, `lun_${l.lun}`);
    if (!(await fs.isDir(m))) {
      await fs.mkdir(m);
      await fs.symlink(p.lun(l.lun), join(m, linkName(p.lun(l.lun))));
      changes.push(`mapped lun_${l.lun}`);
    }
    await writeIfDiffers(
      fs,
      join(m, "write_protect"),
      l.readOnly ? "1" : "0",
      changes,
      `write_protect of lun_${l.lun}`,
    );
  }

  // 6. Backstores this target no longer uses.
  const nowUsed = new Set(soPath.values());
  for (const so of previousObjects) {
    if (!nowUsed.has(so) && (await fs.isDir(so)) && !(await index.isExported(so))) {
      await removeStorageObject(fs, index, so);
      changes.push("unused backstore removed");
    }
  }

  // 7. Last: start accepting logins.
  await writeIfDiffers(fs, join(p.tpg, "enable"), "1", changes, "enabled");
  return changes;
}

async function targetStorageObjects(fs: ConfigFs, p: Paths): Promise<string[]> {
  const out: string[] = [];
  for (const d of await dirs(fs, join(p.tpg, "lun"))) {
    const t = await lunTarget(fs, join(p.tpg, "lun", d));
    if (t) out.push(t);
  }
  return out;
}

/** Takes one target out of configfs with the backstores only it used. */
export async function removeFromConfigfs(
  fs: ConfigFs,
  root: string,
  iqn: string,
  index = new ConfigfsIndex(fs, root),
): Promise<boolean> {
  try {
    await index.sync();
    return await removeIndexed(fs, root, iqn, index);
  } catch (err) {
    index.invalidate();
    throw err;
  }
}

async function removeIndexed(
  fs: ConfigFs,
  root: string,
  iqn: string,
  index: ConfigfsIndex,
): Promise<boolean> {
  const p = new Paths(root, iqn);
  if (!(await fs.isDir(p.target))) return false;
  const objects: string[] = [];
  for (const tpg of await dirs(fs, p.target)) {
    if (!tpg.startsWith("tpgt_")) continue;
    const t = join(p.target, tpg);
    // Stop new logins before taking the pieces away.
    if ((await readTrim(fs, join(t, "enable"))) === "1") await fs.write(join(t, "enable"), "0");
    for (const a of await dirs(fs, join(t, "acls"))) await removeAcl(fs, join(t, "acls", a));
    for (const d of await dirs(fs, join(t, "lun"))) {
      const so = await lunTarget(fs, join(t, "lun", d));
      if (so) objects.push(so);
      for (const l of await links(fs, join(t, "lun", d))) await fs.unlink(join(t, "lun", d, l));
      index.lunUnlinked(join(t, "lun", d));
      await fs.rmdir(join(t, "lun", d));
    }
    for (const n of await dirs(fs, join(t, "np"))) await fs.rmdir(join(t, "np", n));
    await fs.rmdir(t);
  }
  await fs.rmdir(p.target);
  index.targetRemoved(iqn);
  // Its own LUN links named its objects; the index says whether another target's LUN
  // still exports one (never freed then), without walking every other target.
  for (const so of objects) {
    if ((await fs.isDir(so)) && !(await index.isExported(so)))
      await removeStorageObject(fs, index, so);
  }
  return true;
}

export async function listConfigfsTargets(fs: ConfigFs, root: string): Promise<string[]> {
  return dirs(fs, join(root, "iscsi"));
}

/**
 * Parses an ACL's `info` (iscsi_target_configfs.c, lio_target_nacl_info_show):
 * "No active iSCSI Session for Initiator Endpoint: ..." or a block starting with
 * "InitiatorName:" whose connections read "   Address 10.0.0.5 TCP  StatSN: ...".
 */
export function parseAclInfo(info: string): TargetSession | undefined {
  const text = info.trim();
  if (text === "" || text.startsWith("No active")) return undefined;
  const name = /^InitiatorName:\s*(\S+)/m.exec(text)?.[1];
  if (!name) return undefined;
  const address = /^\s*Address\s+(\S+)\s+(TCP|SCTP|iSER)/m.exec(text)?.[1];
  return address === undefined ? { initiatorIqn: name } : { initiatorIqn: name, address };
}

export async function readConfigfsSessions(
  fs: ConfigFs,
  root: string,
  iqn: string,
): Promise<TargetSession[]> {
  const p = new Paths(root, iqn);
  const out: TargetSession[] = [];
  for (const a of await dirs(fs, join(p.tpg, "acls"))) {
    const s = parseAclInfo((await readTrim(fs, join(p.acl(a), "info"))) ?? "");
    if (s) out.push(s);
  }
  // Demo-mode sessions have no ACL and show up here instead; bootfleet never enables
  // demo mode, so anything here is worth seeing.
  const dynamic = (await readTrim(fs, join(p.tpg, "dynamic_sessions"))) ?? "";
  for (const line of dynamic.split("\n")) {
    const n = line.trim();
    if (n !== "" && !out.some((s) => s.initiatorIqn === n)) out.push({ initiatorIqn: n });
  }
  return out;
}
