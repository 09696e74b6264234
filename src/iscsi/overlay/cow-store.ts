import type { FileHandle } from "node:fs/promises";

/**
 * The on-disk layout of dm-snapshot's persistent exception store (the kernel's
 * drivers/md/dm-snap-persistent.c), read to find which chunks a machine wrote:
 * chunk 0 is a header; then metadata areas, each one chunk of {old_chunk, new_chunk}
 * little-endian u64 pairs followed by that many data chunks; new_chunk 0 ends the list.
 */
const SNAP_MAGIC = 0x70416e53;
const EXCEPTION_BYTES = 16;

export interface CowException {
  /** Chunk of the origin (and of the device) the machine wrote. */
  oldChunk: number;
  /** Chunk of the store that holds the written data. */
  newChunk: number;
}

export interface CowStore {
  chunkBytes: number;
  exceptions: CowException[];
}

/**
 * Reads the header and exception table of a persistent store. A store the kernel has
 * never written (all zeros) has no exceptions; one marked invalid (it overflowed) is refused.
 */
export async function readCowStore(fh: FileHandle): Promise<CowStore | undefined> {
  const header = Buffer.alloc(16);
  await fh.read(header, 0, 16, 0);
  const magic = header.readUInt32LE(0);
  if (magic === 0) return undefined;
  if (magic !== SNAP_MAGIC) throw new Error("not a dm-snapshot persistent store (bad magic)");
  if (header.readUInt32LE(4) === 0) {
    throw new Error("the dm-snapshot store is marked invalid (it overflowed or failed)");
  }
  const chunkBytes = header.readUInt32LE(12) * 512;
  if (chunkBytes < 4096 || chunkBytes > 1 << 30) throw new Error(`bad chunk size ${chunkBytes}`);
  const perArea = chunkBytes / EXCEPTION_BYTES;
  const area = Buffer.alloc(chunkBytes);
  const exceptions: CowException[] = [];
  for (let i = 0; ; i++) {
    const chunk = 1 + i * (perArea + 1);
    const { bytesRead } = await fh.read(area, 0, chunkBytes, chunk * chunkBytes);
    if (bytesRead < chunkBytes) break;
    let full = true;
    for (let e = 0; e < perArea; e++) {
      const oldChunk = Number(area.readBigUInt64LE(e * EXCEPTION_BYTES));
      const newChunk = Number(area.readBigUInt64LE(e * EXCEPTION_BYTES + 8));
      if (newChunk === 0) {
        full = false;
        break;
      }
      exceptions.push({ oldChunk, newChunk });
    }
    if (!full) break;
  }
  return { chunkBytes, exceptions };
}

/**
 * Writes a machine's chunks (from its store) over a copy of its origin, which makes the
 * file the device showed. Costs the bytes the machine wrote, whatever the image size.
 * Later exceptions for the same chunk win, as in the kernel's table.
 */
export async function applyCowStore(
  store: CowStore,
  cow: FileHandle,
  dest: FileHandle,
  sizeBytes: number,
): Promise<number> {
  const latest = new Map<number, number>();
  for (const e of store.exceptions) latest.set(e.oldChunk, e.newChunk);
  const buf = Buffer.alloc(store.chunkBytes);
  let written = 0;
  for (const [oldChunk, newChunk] of [...latest].sort((a, b) => a[0] - b[0])) {
    const at = oldChunk * store.chunkBytes;
    if (at >= sizeBytes) continue;
    const len = Math.min(store.chunkBytes, sizeBytes - at);
    const { bytesRead } = await cow.read(buf, 0, len, newChunk * store.chunkBytes);
    if (bytesRead < len) throw new Error(`chunk ${newChunk} of the store is short`);
    await dest.write(buf, 0, len, at);
    written += len;
  }
  return written;
}
