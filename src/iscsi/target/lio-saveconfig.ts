import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "./atomic-write.js";
import type { LunSpec, TargetSpec } from "./types.js";

/**
 * rtslib-fb's saveconfig.json, as `RTSRoot.dump()` writes it and `restore()` reads it.
 * Entries that bootfleet did not write are kept as they are (typed loosely on purpose:
 * an unknown field must survive a merge).
 */
export interface SaveConfig {
  fabric_modules?: unknown[];
  storage_objects?: StorageObjectJson[];
  targets?: TargetJson[];
  [key: string]: unknown;
}

export interface StorageObjectJson {
  name: string;
  plugin: string;
  [key: string]: unknown;
}

export interface TargetJson {
  wwn: string;
  fabric: string;
  tpgs?: TpgJson[];
  [key: string]: unknown;
}

export interface TpgJson {
  tag?: number;
  luns?: { index: number; storage_object: string; [key: string]: unknown }[];
  [key: string]: unknown;
}

/**
 * The backstore name of one LUN of one target. Per target, so that removing a machine
 * never takes a storage object another target uses. rtslib refuses '/' and whitespace.
 */
export function storageObjectName(iqn: string, lun: number): string {
  const unique = iqn.includes(":") ? iqn.slice(iqn.indexOf(":") + 1) : iqn;
  return `bf-${unique}-lun${lun}`;
}

export function pluginOf(kind: LunSpec["kind"]): "fileio" | "block" {
  return kind === "file" ? "fileio" : "block";
}

export function storageObjectPath(iqn: string, l: LunSpec): string {
  return `/backstores/${pluginOf(l.kind)}/${storageObjectName(iqn, l.lun)}`;
}

/** rtslib wants IPv6 portal addresses in brackets. */
export function portalAddress(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

/**
 * Storage object as rtslib's restore() builds it: every key except plugin, attributes
 * and alua_tpgs goes to the backstore's constructor, so only keys that constructor takes
 * may appear (fileio: name dev size wwn write_back; block: name dev wwn readonly write_back).
 * A `size` on a block object or a `readonly` on a fileio one makes restore skip it.
 */
export function storageObjectFor(iqn: string, l: LunSpec): StorageObjectJson {
  const name = storageObjectName(iqn, l.lun);
  if (l.kind === "file") {
    return {
      plugin: "fileio",
      name,
      dev: l.path,
      size: l.sizeBytes,
      wwn: l.wwn,
      // targetcli's default: buffered with write-cache emulation, so the client flushes.
      write_back: true,
      // Client TRIM punches holes in the overlay file instead of leaving written blocks.
      attributes: { emulate_tpu: 1 },
      alua_tpgs: [],
    };
  }
  return {
    plugin: "block",
    name,
    dev: l.path,
    wwn: l.wwn,
    readonly: l.readOnly,
    write_back: false,
    // No emulate_tpu: rtslib's restore would fail the object on a device that cannot discard
    // (a dm-snapshot); bootfleetd sets it at apply where the device can.
    attributes: {},
    alua_tpgs: [],
  };
}

export function targetFor(spec: TargetSpec): TargetJson {
  const acl: Record<string, unknown> = {
    node_wwn: spec.acl.initiatorIqn,
    // The keys rtslib's NodeACL has as properties; others are set on the object and lost.
    chap_userid: spec.acl.chapUser,
    chap_password: spec.acl.chapPassword,
    mapped_luns: [...spec.luns]
      .sort((a, b) => a.lun - b.lun)
      .map((l) => ({ index: l.lun, tpg_lun: l.lun, write_protect: l.readOnly })),
  };
  if (spec.acl.mutualUser && spec.acl.mutualPassword) {
    acl.chap_mutual_userid = spec.acl.mutualUser;
    acl.chap_mutual_password = spec.acl.mutualPassword;
  }
  return {
    wwn: spec.iqn,
    fabric: "iscsi",
    tpgs: [
      {
        tag: 1,
        enable: true,
        attributes: {
          // Never demo mode: only the ACL's initiator, only with CHAP.
          authentication: 1,
          generate_node_acls: 0,
          cache_dynamic_acls: 0,
          demo_mode_write_protect: 1,
        },
        parameters: { AuthMethod: "CHAP" },
        portals: [
          {
            ip_address: portalAddress(spec.portal.address),
            port: spec.portal.port,
            iser: false,
            offload: false,
          },
        ],
        luns: [...spec.luns]
          .sort((a, b) => a.lun - b.lun)
          .map((l) => ({ index: l.lun, storage_object: storageObjectPath(spec.iqn, l) })),
        node_acls: [acl],
      },
    ],
  };
}

function soPathOf(so: StorageObjectJson): string {
  return `/backstores/${so.plugin}/${so.name}`;
}

function referencedPaths(targets: readonly TargetJson[]): Set<string> {
  const out = new Set<string>();
  for (const t of targets)
    for (const tpg of t.tpgs ?? []) for (const l of tpg.luns ?? []) out.add(l.storage_object);
  return out;
}

/**
 * Puts one target (and its storage objects) into a saveconfig, replacing its previous
 * version; every other target and storage object stays as it was. Pure: returns a copy.
 */
export function mergeTarget(config: SaveConfig, spec: TargetSpec): SaveConfig {
  const out = structuredClone(config);
  const targets = out.targets ?? [];
  const objects = out.storage_objects ?? [];
  const others = targets.filter((t) => t.wwn !== spec.iqn);
  const usedByOthers = referencedPaths(others);
  const previous = referencedPaths(targets.filter((t) => t.wwn === spec.iqn));

  const mine = spec.luns.map((l) => storageObjectFor(spec.iqn, l));
  const minePaths = new Set(mine.map(soPathOf));
  for (const p of minePaths) {
    if (usedByOthers.has(p))
      throw new Error(`storage object ${p} of ${spec.iqn} is already used by another target`);
  }
  const keep = objects.filter((so) => {
    const p = soPathOf(so);
    if (minePaths.has(p)) return false;
    // This target's old objects go unless another target uses them.
    return !(previous.has(p) && !usedByOthers.has(p));
  });
  out.storage_objects = [...keep, ...mine];

  const t = targetFor(spec);
  const at = targets.findIndex((x) => x.wwn === spec.iqn);
  if (at >= 0) targets[at] = t;
  else targets.push(t);
  out.targets = targets;
  out.fabric_modules ??= [];
  return out;
}

/** Takes one target out, with the storage objects that only it used. */
export function removeTarget(config: SaveConfig, iqn: string): SaveConfig {
  const out = structuredClone(config);
  const targets = out.targets ?? [];
  const others = targets.filter((t) => t.wwn !== iqn);
  const usedByOthers = referencedPaths(others);
  const previous = referencedPaths(targets.filter((t) => t.wwn === iqn));
  out.targets = others;
  out.storage_objects = (out.storage_objects ?? []).filter((so) => {
    const p = soPathOf(so);
    return !(previous.has(p) && !usedByOthers.has(p));
  });
  return out;
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(o)
        .sort()
        .map((k) => [k, sortKeys(o[k])]),
    );
  }
  return v;
}

/** The same layout rtslib writes (json.dumps sort_keys, indent 2), so diffs stay small. */
export function serializeSaveConfig(config: SaveConfig): string {
  return `${JSON.stringify(sortKeys(config), null, 2)}\n`;
}

export async function readSaveConfig(path: string): Promise<SaveConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      return { fabric_modules: [], storage_objects: [], targets: [] };
    throw err;
  }
  // A file we cannot read is never overwritten: it may hold targets bootfleet does not know.
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // V8 quotes part of the text in its message, and the text holds CHAP secrets.
    throw new Error(`${path} is not valid JSON; not touching it`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
    throw new Error(`${path} is not a saveconfig object`);
  return parsed as SaveConfig;
}

/** Read, change, and atomically replace saveconfig.json (0600: it holds CHAP secrets). */
export async function updateSaveConfig(
  path: string,
  change: (c: SaveConfig) => SaveConfig,
): Promise<void> {
  const before = await readSaveConfig(path);
  const after = change(before);
  await writeFileAtomic(path, serializeSaveConfig(after));
}
