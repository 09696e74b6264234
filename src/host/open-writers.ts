import { readdir, readFile, readlink } from "node:fs/promises";

/**
 * Whether a process holds `path` open for writing, read from /proc like fuser does: each
 * /proc/<pid>/fd/<n> that links to the file, and the access mode in its fdinfo flags.
 * A size that stops growing does not mean a copy is finished (scp, Samba or a slow NFS
 * client may pause for longer than any window); an open writer does.
 *
 * Only processes this one may inspect are seen (all of them as root; under ProtectProc=
 * invisible or as another user, fewer): an unseen writer counts as none, so the caller's
 * stability window stays the only guard for those.
 */
export async function hasOpenWriter(path: string, procRoot = "/proc"): Promise<boolean> {
  let pids: string[];
  try {
    pids = (await readdir(procRoot)).filter((n) => /^\d+$/.test(n));
  } catch {
    return false;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = await readdir(`${procRoot}/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to inspect
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = await readlink(`${procRoot}/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (target !== path) continue;
      if (await openForWriting(`${procRoot}/${pid}/fdinfo/${fd}`)) return true;
    }
  }
  return false;
}

async function openForWriting(fdinfo: string): Promise<boolean> {
  try {
    const m = /^flags:\s*([0-7]+)$/m.exec(await readFile(fdinfo, "utf8"));
    // O_ACCMODE: 0 read-only, 1 write-only, 2 read-write.
    return m !== null && (Number.parseInt(m[1]!, 8) & 3) !== 0;
  } catch {
    return false;
  }
}
