import { statfs } from "node:fs/promises";

/** What the free-space reserve says about writing `needBytes` more into a folder. */
export interface ReserveCheck {
  ok: boolean;
  /** Bytes an unprivileged writer can still use on the folder's file system. */
  free_bytes: number;
  /** Bytes kept free: reserve_percent of the file system's size. */
  reserve_bytes: number;
  /** Set when not ok: one sentence an admin can act on. */
  reason?: string;
}

const GIB = 1024 ** 3;
const gib = (n: number) => `${(n / GIB).toFixed(1)} GiB`;

/**
 * The free-space reserve (`[storage] reserve_percent`): running machines write their
 * overlays to the same file system as images and new overlays, and a full overlay crashes
 * the PC using it (Windows can be left unbootable). So anything that would take the free
 * space below the reserve (an upload, a new overlay, a new version) is refused up front,
 * and what is left stays for the machines already running.
 */
export async function checkReserve(
  dir: string,
  reservePercent: number,
  needBytes = 0,
): Promise<ReserveCheck> {
  const s = await statfs(dir);
  const total = s.blocks * s.bsize;
  const free = s.bavail * s.bsize;
  const reserve = Math.ceil((total * reservePercent) / 100);
  const after = free - needBytes;
  if (after >= reserve) return { ok: true, free_bytes: free, reserve_bytes: reserve };
  const need = needBytes > 0 ? ` for ${gib(needBytes)} more` : "";
  return {
    ok: false,
    free_bytes: free,
    reserve_bytes: reserve,
    reason: `not enough free space on the file system of ${dir}${need}: ${gib(free)} free, and ${gib(reserve)} (${reservePercent}% of ${gib(total)}) is kept free for running machines' overlays ([storage] reserve_percent)`,
  };
}
