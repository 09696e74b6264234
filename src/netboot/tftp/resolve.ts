// Maps a requested TFTP filename to a file on disk, confined to the TFTP root.
//
// Policy (the name is untrusted input from any host on the LAN):
// - Backslashes are path separators: Windows-derived boot loaders (WDS, some PXE menus) send
//   `boot\x86\file`. Leading separators are dropped: firmware often sends `/undionly.kpxe`, meaning
//   the file at the top of the TFTP root (as in.tftpd -s and dnsmasq do). Empty and `.` segments
//   are dropped.
// - Any `..` segment is refused outright (access violation), even one that would stay inside the
//   root: no legitimate boot client needs it, and refusing is simpler to reason about.
// - Control characters (NUL cannot occur, it ends the name on the wire) and names longer than
//   `maxNameLength` bytes are refused (access violation).
// - Aliases are looked up on the normalised name and may point anywhere (they are configuration).
// - Everything else is resolved with realpath and must stay inside the real root: a symlink
//   leading out is an access violation, a missing file or a directory is "file not found".
// - Except the common case, a name straight in the root (snponly.efi, undionly.kpxe): one lstat
//   that finds a regular file there proves what realpath would (the root is already real, the
//   name has no separator and is not `..`, the last component is no symlink), and its Stats go
//   on to the file store, whose cache check then needs no lstat of its own. One trip through
//   libuv's thread pool per request instead of two (realpath, then lstat): measured in
//   bench/tftp/RESULTS.md, run F. Anything else that lstat finds (a symlink, a directory, an
//   error) takes the realpath way, which decides and words the answer as before.

import type { Stats } from "node:fs";
import { lstat, realpath } from "node:fs/promises";
import { isAbsolute, join, sep } from "node:path";
import { ERR_ACCESS_VIOLATION, ERR_FILE_NOT_FOUND } from "./packet.js";

export const DEFAULT_MAX_NAME_LENGTH = 255;

export type Resolution =
  | {
      ok: true;
      name: string;
      path: string;
      alias: boolean;
      /** lstat of `path`, when resolving took one (a regular file straight in the root). */
      stats?: Stats;
    }
  | { ok: false; errorCode: number; reason: string; refused: boolean };

export interface ResolveContext {
  /** Real path of the TFTP root (already passed through realpath). */
  realRoot: string;
  /** Normalised name (no leading slash, `/` separators) → absolute path. */
  aliases: ReadonlyMap<string, string>;
  maxNameLength: number;
}

function refuse(reason: string): Resolution {
  return { ok: false, errorCode: ERR_ACCESS_VIOLATION, reason, refused: true };
}

function notFound(reason: string): Resolution {
  return { ok: false, errorCode: ERR_FILE_NOT_FOUND, reason, refused: false };
}

/** The name as the alias map and the file system see it, or a refusal. */
export function normaliseTftpName(
  requested: string,
  maxNameLength: number = DEFAULT_MAX_NAME_LENGTH,
): { ok: true; name: string } | { ok: false; reason: string } {
  if (Buffer.byteLength(requested, "utf8") > maxNameLength) {
    return { ok: false, reason: "name too long" };
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\x00-\x1f\x7f]/.test(requested)) return { ok: false, reason: "control character in name" };
  const segments: string[] = [];
  for (const segment of requested.replace(/\\/g, "/").split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") return { ok: false, reason: "parent directory segment" };
    segments.push(segment);
  }
  return { ok: true, name: segments.join("/") };
}

export function normaliseAliases(
  aliases: Readonly<Record<string, string>> | ReadonlyMap<string, string> | undefined,
): Map<string, string> {
  const out = new Map<string, string>();
  if (aliases === undefined) return out;
  const entries = aliases instanceof Map ? aliases.entries() : Object.entries(aliases);
  for (const [name, target] of entries) {
    const n = normaliseTftpName(name, Number.MAX_SAFE_INTEGER);
    if (!n.ok || n.name === "") throw new Error(`invalid TFTP alias name ${JSON.stringify(name)}`);
    if (!isAbsolute(target)) throw new Error(`TFTP alias ${name} must map to an absolute path`);
    out.set(n.name, target);
  }
  return out;
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String(err.code) : undefined;
}

export async function resolveTftpPath(requested: string, ctx: ResolveContext): Promise<Resolution> {
  const normal = normaliseTftpName(requested, ctx.maxNameLength);
  if (!normal.ok) return refuse(normal.reason);
  const name = normal.name;
  if (name === "") return notFound("empty name");

  const aliasTarget = ctx.aliases.get(name);
  if (aliasTarget !== undefined) {
    try {
      return { ok: true, name, path: await realpath(aliasTarget), alias: true };
    } catch (err) {
      return notFound(`alias target ${aliasTarget}: ${errnoCode(err) ?? "unreadable"}`);
    }
  }

  const inRoot = join(ctx.realRoot, name);
  if (!name.includes("/")) {
    try {
      const st = await lstat(inRoot);
      if (st.isFile()) return { ok: true, name, path: inRoot, alias: false, stats: st };
    } catch (err) {
      const code = errnoCode(err);
      if (code === "ENOENT" || code === "ENOTDIR") return notFound("no such file");
    }
  }

  let real: string;
  try {
    real = await realpath(inRoot);
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT" || code === "ENOTDIR") return notFound("no such file");
    return refuse(`cannot resolve: ${code ?? "error"}`);
  }
  if (!real.startsWith(ctx.realRoot.endsWith(sep) ? ctx.realRoot : ctx.realRoot + sep)) {
    return refuse("resolves outside the TFTP root");
  }
  return { ok: true, name, path: real, alias: false };
}
