/**
 * Reading an overlay's extent map from `xfs_io -c "fiemap -v"`.
 *
 * Why FIEMAP: the kernel marks every extent a file shares with another file with
 * FIEMAP_EXTENT_SHARED, so the bytes a machine wrote into its reflinked overlay are exactly
 * the non-shared extents. st_blocks can't tell shared from private, and on XFS it also counts
 * the copy-on-write fork's speculative preallocation (cowextsize), which would make a 4 KiB
 * write look like 128 KiB. xfs_io is used instead of filefrag because its columns are fixed
 * 512-byte units with numeric flags, and the ioctl is generic, so it works on btrfs too.
 */

// linux/fiemap.h
export const FIEMAP_EXTENT_LAST = 0x1;
export const FIEMAP_EXTENT_DELALLOC = 0x4;
export const FIEMAP_EXTENT_UNWRITTEN = 0x800;
export const FIEMAP_EXTENT_SHARED = 0x2000;

const SECTOR = 512;

export interface FiemapExtent {
  offsetBytes: number;
  lengthBytes: number;
  /** undefined for a hole */
  flags: number | undefined;
}

// "   1: [204800..205439]:    192..831           640 0x2000" or "   0: [0..204799]:   hole   204800"
const EXTENT_LINE =
  /^\s*\d+:\s*\[(\d+)\.\.(\d+)\]:\s+(hole|\d+\.\.\d+)\s+(\d+)(?:\s+0x([0-9a-fA-F]+))?\s*$/;

export function parseXfsIoFiemap(output: string): FiemapExtent[] {
  const extents: FiemapExtent[] = [];
  for (const line of output.split("\n")) {
    const m = EXTENT_LINE.exec(line);
    if (!m) continue;
    const [, start, end, where, , flags] = m;
    const first = Number(start);
    const last = Number(end);
    extents.push({
      offsetBytes: first * SECTOR,
      lengthBytes: (last - first + 1) * SECTOR,
      flags: where === "hole" ? undefined : Number.parseInt(flags ?? "0", 16),
    });
  }
  return extents;
}

export interface ExtentSummary {
  /** Bytes mapped to storage (every extent but holes). */
  mappedBytes: number;
  sharedBytes: number;
  /**
   * Mapped bytes not shared with any other file. Unwritten (preallocated) and delayed-allocation
   * extents count: they are space this overlay alone holds.
   */
  uniqueBytes: number;
}

export function summarizeExtents(extents: readonly FiemapExtent[]): ExtentSummary {
  let mappedBytes = 0;
  let sharedBytes = 0;
  for (const e of extents) {
    if (e.flags === undefined) continue;
    mappedBytes += e.lengthBytes;
    if ((e.flags & FIEMAP_EXTENT_SHARED) !== 0) sharedBytes += e.lengthBytes;
  }
  return { mappedBytes, sharedBytes, uniqueBytes: mappedBytes - sharedBytes };
}

/**
 * The xfs_io arguments that flush each file first (so delayed writes are mapped) then map it.
 * With several paths xfs_io opens them all and runs the commands on each in turn.
 */
export function xfsIoFiemapArgs(...paths: string[]): string[] {
  return ["-r", "-c", "fsync", "-c", "fiemap -v", ...paths];
}

/**
 * The output of one xfs_io run over several files, cut per file: `fiemap -v` starts each
 * file's map with a line "<path>:". A path whose header is absent gets no entry.
 */
export function splitXfsIoFiemapByFile(
  output: string,
  paths: readonly string[],
): Map<string, string> {
  const wanted = new Set(paths);
  const byPath = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of output.split("\n")) {
    const header = line.endsWith(":") ? line.slice(0, -1) : undefined;
    if (header !== undefined && wanted.has(header)) {
      current = [];
      byPath.set(header, current);
    } else current?.push(line);
  }
  return new Map([...byPath].map(([p, lines]) => [p, lines.join("\n")]));
}
