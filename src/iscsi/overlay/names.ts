import { OverlayError } from "./errors.js";

/**
 * An overlay id becomes a file name and part of an LV name, so it is held to a charset that is
 * safe in both: it can never be a path (no "/"), never "." or "..", never start with "-" or "."
 * (an option to a command, a hidden file).
 */
const OVERLAY_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

function isOverlayId(id: string): boolean {
  return typeof id === "string" && OVERLAY_ID.test(id) && !id.includes("..");
}

export function validateOverlayId(id: string): string {
  if (!isOverlayId(id)) {
    throw new OverlayError(
      "INVALID_NAME",
      `invalid overlay id ${JSON.stringify(id)}: use 1 to 100 of A-Z a-z 0-9 _ . -, starting with a letter or digit, without ".."`,
      { overlayId: String(id) },
    );
  }
  return id;
}

/**
 * The overlay ids among a driver's own names (files, LVs), sorted: `idOf` takes a name to
 * its id, or undefined when the name is not an overlay's; an id that is not valid is not one
 * of ours either.
 */
export function overlayIdsAmong(
  names: Iterable<string>,
  idOf: (name: string) => string | undefined,
): string[] {
  const ids: string[] = [];
  for (const name of names) {
    const id = idOf(name);
    if (id !== undefined && isOverlayId(id)) ids.push(id);
  }
  return ids.sort();
}

// lvm(8), VALID NAMES.
const LVM_CHARS = /^[A-Za-z0-9+_.-]+$/;
const LV_RESERVED_NAMES = new Set([".", "..", "snapshot", "pvmove"]);
const LV_RESERVED_PARTS = [
  "_cdata",
  "_cmeta",
  "_corig",
  "_iorig",
  "_mimage",
  "_mlog",
  "_pmspare",
  "_rimage",
  "_rmeta",
  "_tdata",
  "_tmeta",
  "_vdata",
  "_vorigin",
  "_wcorig",
];
// LVM's NAME_LEN is 128 including the terminating NUL.
const LVM_NAME_MAX = 127;

function lvmNameProblem(name: string): string | undefined {
  if (name.length === 0) return "is empty";
  if (name.length > LVM_NAME_MAX) return `is longer than ${LVM_NAME_MAX} characters`;
  if (!LVM_CHARS.test(name)) return "may hold only a-z A-Z 0-9 + _ . -";
  if (name.startsWith("-")) return "may not start with a hyphen";
  if (name === "." || name === "..") return 'may not be "." or ".."';
  return undefined;
}

export function validateVgName(vg: string): string {
  const problem = lvmNameProblem(vg);
  if (problem !== undefined) {
    throw new OverlayError(
      "INVALID_NAME",
      `invalid LVM volume group name ${JSON.stringify(vg)}: it ${problem}`,
    );
  }
  return vg;
}

export function validateLvName(lv: string, vg?: string): string {
  let problem = lvmNameProblem(lv);
  if (problem === undefined && LV_RESERVED_NAMES.has(lv)) problem = "is reserved by LVM";
  if (problem === undefined) {
    const part = LV_RESERVED_PARTS.find((p) => lv.includes(p));
    if (part !== undefined) problem = `contains ${JSON.stringify(part)}, reserved by LVM`;
  }
  // Device-mapper names the device "VG-LV" with each hyphen doubled, within the same limit.
  if (problem === undefined && vg !== undefined) {
    const dmName = `${vg.replaceAll("-", "--")}-${lv.replaceAll("-", "--")}`;
    if (dmName.length > LVM_NAME_MAX) {
      problem = `makes the device-mapper name ${dmName.length} characters long (at most ${LVM_NAME_MAX})`;
    }
  }
  if (problem !== undefined) {
    throw new OverlayError(
      "INVALID_NAME",
      `invalid LVM logical volume name ${JSON.stringify(lv)}: it ${problem}`,
    );
  }
  return lv;
}
