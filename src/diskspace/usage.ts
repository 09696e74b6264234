import { access, constants, stat, statfs } from "node:fs/promises";

/** One file system's usage in the GGnet shape (`/storage/info`). */
export interface StorageUsage {
  path: string;
  total_bytes: number;
  used_bytes: number;
  free_bytes: number;
  total_gb: number;
  used_gb: number;
  free_gb: number;
  usage_percent: number;
}

const GIB = 1024 ** 3;
const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits;

/**
 * statfs of the file system holding `path`, counted as df(1) does: free is what an
 * unprivileged writer can still use (blocks reserved for root are neither used nor free),
 * and usage_percent is used / (used + free), df's "Use%".
 */
export async function usageOf(path: string): Promise<StorageUsage> {
  const s = await statfs(path);
  const total = s.blocks * s.bsize;
  const used = (s.blocks - s.bfree) * s.bsize;
  const free = s.bavail * s.bsize;
  const denom = used + free;
  return {
    path,
    total_bytes: total,
    used_bytes: used,
    free_bytes: free,
    total_gb: round(total / GIB, 2),
    used_gb: round(used / GIB, 2),
    free_gb: round(free / GIB, 2),
    usage_percent: denom > 0 ? round((used / denom) * 100, 1) : 0,
  };
}

export interface StorageInfo {
  upload_storage: StorageUsage;
  images_storage: StorageUsage;
  system_storage: StorageUsage;
}

/**
 * GET /storage/info. Uploads are written into the images folder (so that the finished file
 * is renamed, not copied), so upload_storage and images_storage name the same place unless
 * the caller says otherwise.
 */
export async function storageInfo(dirs: {
  imagesDir: string;
  uploadDir?: string;
  systemPath?: string;
}): Promise<StorageInfo> {
  const [upload_storage, images_storage, system_storage] = await Promise.all([
    usageOf(dirs.uploadDir ?? dirs.imagesDir),
    usageOf(dirs.imagesDir),
    usageOf(dirs.systemPath ?? "/"),
  ]);
  return { upload_storage, images_storage, system_storage };
}

export type HealthStatus = "healthy" | "warning" | "critical";

export interface DirectoryHealth {
  exists: boolean;
  writable: boolean;
  usage_percent: number | null;
  free_bytes: number | null;
  status: HealthStatus;
  problem?: string;
}

export interface StorageHealth {
  status: HealthStatus;
  timestamp: string;
  directories: Record<string, DirectoryHealth>;
}

export interface HealthThresholds {
  /** Use% at or above which a folder is a warning (default 85). */
  warnPercent?: number;
  /** Use% at or above which it is critical (default 95). */
  criticalPercent?: number;
  clock?: () => number;
}

/**
 * GET /storage/health: each folder the daemon writes must exist, be writable by it, and have
 * room; the overall status is the worst of them.
 */
export async function storageHealth(
  dirs: readonly string[],
  opts: HealthThresholds = {},
): Promise<StorageHealth> {
  const directories: Record<string, DirectoryHealth> = {};
  let overall: HealthStatus = "healthy";
  for (const dir of dirs) {
    const h = await directoryHealth(dir, opts);
    directories[dir] = h;
    if (h.status === "critical" || (h.status === "warning" && overall === "healthy")) {
      overall = h.status;
    }
  }
  return {
    status: overall,
    timestamp: new Date((opts.clock ?? Date.now)()).toISOString(),
    directories,
  };
}

/**
 * The one check of a folder the daemon writes: it exists, is a directory, is writable by
 * this process, and how full its file system is.
 */
export async function directoryHealth(
  dir: string,
  opts: Omit<HealthThresholds, "clock"> = {},
): Promise<DirectoryHealth> {
  const warn = opts.warnPercent ?? 85;
  const crit = opts.criticalPercent ?? 95;
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) {
      return bad(true, false, "not a directory");
    }
  } catch {
    return bad(false, false, "does not exist");
  }
  let writable = true;
  try {
    await access(dir, constants.W_OK);
  } catch {
    writable = false;
  }
  const u = await usageOf(dir);
  let status: HealthStatus =
    u.usage_percent >= crit ? "critical" : u.usage_percent >= warn ? "warning" : "healthy";
  let problem: string | undefined;
  if (!writable) {
    status = "critical";
    problem = "not writable by bootfleetd";
  } else if (status !== "healthy") {
    problem = `${u.usage_percent}% full`;
  }
  return {
    exists: true,
    writable,
    usage_percent: u.usage_percent,
    free_bytes: u.free_bytes,
    status,
    ...(problem ? { problem } : {}),
  };
}

function bad(exists: boolean, writable: boolean, problem: string): DirectoryHealth {
  return { exists, writable, usage_percent: null, free_bytes: null, status: "critical", problem };
}
