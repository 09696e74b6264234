import { randomBytes } from "node:crypto";
import { lstat, mkdir, open, readdir, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { errorText } from "../../lib/error-text.js";
import { errnoCode, isNoSpace, OverlayError, type OverlayErrorCode } from "./errors.js";
import { overlayIdsAmong } from "./names.js";
import { isQuarantineName, parseOwner, type QuarantinedOverlay, quarantineName } from "./owner.js";

/*
 * Overlays kept as one file each in a folder (reflink clones, dm-snapshot stores): their
 * listing, quarantine folder, JSON records, temp names and file errors, shared by those drivers.
 */

// Overlays set aside, each with a <name>.json saying whose it was and why.
export const QUARANTINE_DIR = "quarantine";
// Temp files start with "." so a listing never mistakes one for an overlay.
export const TMP_MARK = ".tmp-";

/** A fresh temp name in `dir` for something being written for `stem` (published by rename or link). */
export function tempPath(dir: string, stem: string): string {
  return join(dir, `.${stem}${TMP_MARK}${randomBytes(6).toString("hex")}`);
}

/**
 * A file system failure as an OverlayError: full (NO_SPACE, naming the folder to free, `fullDir`,
 * by default the one the file is in), missing (NOT_FOUND) or anything else (IO).
 */
export function overlayFsError(
  err: unknown,
  overlayId: string | undefined,
  what: string,
  path: string,
  fullDir: string = dirname(path),
): OverlayError {
  const who = overlayId === undefined ? "" : `overlay "${overlayId}": `;
  const errno = errnoCode(err);
  let code: OverlayErrorCode = "IO";
  let why = errorText(err);
  if (isNoSpace(err)) {
    code = "NO_SPACE";
    why = `the file system of ${fullDir} is full (${errno}); free space there or grow it`;
  } else if (errno === "ENOENT") {
    code = "NOT_FOUND";
    why = `${path} does not exist (ENOENT)`;
  }
  return new OverlayError(code, `${who}${what}: ${why}`, { overlayId, path, cause: err });
}

/** The overlay ids of the files named <id><suffix> in `dir`, sorted. */
export async function listOverlayFiles(dir: string, suffix: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw overlayFsError(err, undefined, `cannot list overlay folder ${dir}`, dir, dir);
  }
  return overlayIdsAmong(names, (n) =>
    n.endsWith(suffix) ? n.slice(0, -suffix.length) : undefined,
  );
}

/** The image folder versions are made in; a driver configured without one cannot make them. */
export function requireImageDir(imageDir: string | undefined): string {
  if (imageDir === undefined) {
    throw new OverlayError("NOT_FOUND", "no image folder is configured: versions cannot be made");
  }
  return imageDir;
}

export async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/**
 * Writes `value` as JSON to `path` through a temp file and a rename, so a reader sees the old
 * record or the new one; `durable` also flushes the folder so the rename survives a crash.
 */
export async function writeJsonRecord(
  path: string,
  value: unknown,
  o: { overlayId: string; what: string; tmpStem: string; durable?: boolean },
): Promise<void> {
  const dir = dirname(path);
  const tmp = tempPath(dir, o.tmpStem);
  try {
    await writeFile(tmp, `${JSON.stringify(value)}\n`, { mode: 0o640, flush: true });
    await rename(tmp, path);
    if (o.durable) await syncDir(dir);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw overlayFsError(err, o.overlayId, o.what, path);
  }
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Moves an overlay's file into `<dir>/quarantine` beside a record of whose it was and why;
 * returns its quarantine name. The record holds `extra` (owner, origin) after the reason.
 */
export async function moveToQuarantineDir(
  dir: string,
  overlayId: string,
  file: string,
  suffix: string,
  reason: string,
  extra: Record<string, unknown>,
): Promise<string> {
  const qdir = join(dir, QUARANTINE_DIR);
  await mkdir(qdir, { recursive: true, mode: 0o750 });
  const name = quarantineName(overlayId, new Date());
  const record = { overlayId, reason, quarantinedAt: new Date().toISOString(), ...extra };
  try {
    await writeFile(join(qdir, `${name}.json`), `${JSON.stringify(record)}\n`, { mode: 0o640 });
    // Same file system: a rename, so the bytes are kept as they are, at no cost.
    await rename(file, join(qdir, `${name}${suffix}`));
  } catch (err) {
    throw overlayFsError(err, overlayId, `cannot quarantine ${file}`, file);
  }
  return name;
}

/** The quarantined overlays in `<dir>/quarantine`; `sizeOf` says what a file's size is for this driver. */
export async function listQuarantineDir(
  dir: string,
  suffix: string,
  sizeOf: (st: { size: number; blocks: number }) => number,
): Promise<QuarantinedOverlay[]> {
  const qdir = join(dir, QUARANTINE_DIR);
  let names: string[];
  try {
    names = await readdir(qdir);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw overlayFsError(err, undefined, `cannot list ${qdir}`, qdir);
  }
  const out: QuarantinedOverlay[] = [];
  for (const file of names.sort()) {
    if (!file.endsWith(suffix)) continue;
    const name = file.slice(0, -suffix.length);
    if (!isQuarantineName(name)) continue;
    const st = await lstat(join(qdir, file)).catch(() => undefined);
    if (!st?.isFile()) continue;
    const meta = await readJson(join(qdir, `${name}.json`));
    const owner = parseOwner(meta?.owner);
    out.push({
      name,
      overlayId: typeof meta?.overlayId === "string" ? meta.overlayId : name.split(".q")[0]!,
      reason: typeof meta?.reason === "string" ? meta.reason : "unknown",
      quarantinedAt: typeof meta?.quarantinedAt === "string" ? meta.quarantinedAt : "",
      sizeBytes: sizeOf(st),
      ...(owner ? { owner } : {}),
    });
  }
  return out;
}

/** Deletes a quarantined overlay and its record; false when there is none of that name. */
export async function deleteFromQuarantineDir(
  dir: string,
  name: string,
  suffix: string,
): Promise<boolean> {
  if (!isQuarantineName(name)) return false;
  const qdir = join(dir, QUARANTINE_DIR);
  const file = join(qdir, `${name}${suffix}`);
  try {
    await unlink(file);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return false;
    throw overlayFsError(err, undefined, `cannot delete ${file}`, file);
  }
  await unlink(join(qdir, `${name}.json`)).catch(() => {});
  return true;
}
