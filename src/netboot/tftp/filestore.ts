// Where transfers get their bytes. A lab powering on 50 machines makes 50 requests for the same
// iPXE binary within a second: small files are read once into memory and shared by every transfer
// of the same version of the file (same device, inode, size and mtime); big files are served from
// one shared open handle with positional reads, so memory stays bounded.

import type { Stats } from "node:fs";
import { constants } from "node:fs";
import { type FileHandle, lstat, open } from "node:fs/promises";
import { DataPackets, MIN_PACKED_BLKSIZE } from "./data-packets.js";
import { toNetascii } from "./netascii.js";
import { ERR_ACCESS_VIOLATION, ERR_FILE_NOT_FOUND, ERR_NOT_DEFINED } from "./packet.js";

export interface FileSource {
  /** Bytes the transfer will send (after netascii conversion). */
  readonly size: number;
  /** Bytes [offset, offset + length), shorter at the end of the file. */
  read(offset: number, length: number): Buffer | Promise<Buffer>;
  /**
   * The file as ready DATA packets for `blksize`, shared by every transfer of it; undefined when
   * the store does not lay this file out (big or unshared files, tiny blksizes, too many sizes):
   * the transfer then sends from read().
   */
  packets?(blksize: number): DataPackets | undefined;
  /** Called exactly once when the transfer ends, however it ends. */
  release(): void;
}

/**
 * Layouts kept per file and mode: clients use one or two blksizes (1468 on Ethernet, 512
 * without the option); a client asking for many others gets the copy-free read path instead of
 * one more copy of the file in memory per size.
 */
const MAX_LAYOUTS_PER_FILE = 3;

export type OpenResult =
  | { ok: true; source: FileSource }
  | { ok: false; errorCode: number; reason: string };

export interface FileStoreOptions {
  /** Files up to this size are held in memory and shared. */
  maxCachedFileBytes: number;
  /** Memory kept for files no transfer is using (least recently used go first). */
  cacheMaxBytes: number;
  /** false: every transfer reads its own copy (only to measure what sharing saves). */
  share: boolean;
}

export interface FileStoreStats {
  /** Whole-file reads from disk since start. */
  fileLoads: number;
  /** Positional reads on shared handles since start (big files). */
  handleReads: number;
  cachedFiles: number;
  cachedBytes: number;
  openHandles: number;
}

interface MemoryEntry {
  key: string;
  path: string;
  refs: number;
  size: number;
  loaded: Promise<Buffer>;
  buffer: Buffer | undefined;
  netascii: Buffer | undefined;
  /** DataPackets by `${mode}:${blksize}`. */
  layouts: Map<string, DataPackets>;
}

/** Memory an entry holds: the file, its netascii form and its packet layouts. */
function entryBytes(e: MemoryEntry): number {
  let bytes = e.size + (e.netascii?.length ?? 0);
  for (const l of e.layouts.values()) bytes += l.byteLength;
  return bytes;
}

interface HandleEntry {
  key: string;
  refs: number;
  size: number;
  handle: FileHandle;
}

/**
 * Identifies one version of a file. ctime is in it so that a chmod or chown (which leave mtime
 * alone) makes a new version, and the next request opens the file again with its permissions.
 */
function versionKey(st: Stats, path: string): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${path}`;
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String(err.code) : undefined;
}

async function readWhole(handle: FileHandle, size: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(size);
  let done = 0;
  while (done < size) {
    const { bytesRead } = await handle.read(buf, done, size - done, done);
    if (bytesRead === 0) break; // the file shrank while being read: serve what was there
    done += bytesRead;
  }
  return done === size ? buf : buf.subarray(0, done);
}

export class FileStore {
  readonly #opts: FileStoreOptions;
  readonly #memory = new Map<string, MemoryEntry>(); // insertion order = least recently used first
  readonly #handles = new Map<string, HandleEntry>();
  #fileLoads = 0;
  #handleReads = 0;
  #openHandles = 0;

  constructor(opts: FileStoreOptions) {
    this.#opts = opts;
  }

  stats(): FileStoreStats {
    let cachedBytes = 0;
    for (const e of this.#memory.values()) cachedBytes += entryBytes(e);
    return {
      fileLoads: this.#fileLoads,
      handleReads: this.#handleReads,
      cachedFiles: this.#memory.size,
      cachedBytes,
      openHandles: this.#openHandles,
    };
  }

  /**
   * `path` must already be a real path (no symlinks): the last component is opened O_NOFOLLOW.
   * `seen`: an lstat of `path` the caller has just taken (resolve.ts does for names straight in
   * the root), used for the cache check in place of one more.
   */
  async open(path: string, mode: "octet" | "netascii", seen?: Stats): Promise<OpenResult> {
    // The common case in a boot storm: the version in memory is still the file on disk. One
    // lstat says so, instead of open, fstat and close (each a trip through libuv's thread pool).
    // Anything else (first request, a changed file, a symlink, an error) takes the open path
    // below, which decides and words the answer.
    const cached = this.#opts.share ? await this.#cachedVersion(path, seen) : undefined;
    if (cached !== undefined) {
      try {
        return { ok: true, source: await this.#share(cached, mode) };
      } catch (err) {
        return {
          ok: false,
          errorCode: ERR_ACCESS_VIOLATION,
          reason: `cannot read: ${errnoCode(err) ?? String(err)}`,
        };
      }
    }
    let handle: FileHandle;
    try {
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      const code = errnoCode(err);
      if (code === "ENOENT" || code === "ENOTDIR") {
        return { ok: false, errorCode: ERR_FILE_NOT_FOUND, reason: "no such file" };
      }
      return {
        ok: false,
        errorCode: ERR_ACCESS_VIOLATION,
        reason: `cannot open: ${code ?? "error"}`,
      };
    }
    this.#openHandles++;
    let keep = false;
    try {
      const st = await handle.stat();
      if (!st.isFile()) {
        return { ok: false, errorCode: ERR_FILE_NOT_FOUND, reason: "not a regular file" };
      }
      const small = st.size <= this.#opts.maxCachedFileBytes;
      if (!small && mode === "netascii") {
        return {
          ok: false,
          errorCode: ERR_NOT_DEFINED,
          reason: "netascii is only served for small text files",
        };
      }
      const key = versionKey(st, path);
      if (small)
        return { ok: true, source: await this.#memorySource(key, path, st.size, handle, mode) };
      keep = true;
      return { ok: true, source: this.#handleSource(key, st.size, handle) };
    } catch (err) {
      return {
        ok: false,
        errorCode: ERR_ACCESS_VIOLATION,
        reason: `cannot read: ${errnoCode(err) ?? String(err)}`,
      };
    } finally {
      if (!keep) await this.#close(handle);
    }
  }

  /** The cached entry for the file now at `path` (not followed if a symlink), if any. */
  async #cachedVersion(path: string, seen: Stats | undefined): Promise<MemoryEntry | undefined> {
    if (this.#memory.size === 0) return undefined;
    let st: Stats;
    try {
      st = seen ?? (await lstat(path));
    } catch {
      return undefined;
    }
    return st.isFile() ? this.#memory.get(versionKey(st, path)) : undefined;
  }

  async #close(handle: FileHandle): Promise<void> {
    this.#openHandles--;
    await handle.close().catch(() => {});
  }

  async #memorySource(
    key: string,
    path: string,
    size: number,
    handle: FileHandle,
    mode: "octet" | "netascii",
  ): Promise<FileSource> {
    if (!this.#opts.share) {
      this.#fileLoads++;
      const data = await readWhole(handle, size);
      const bytes = mode === "netascii" ? toNetascii(data) : data;
      return { size: bytes.length, read: (o, l) => bytes.subarray(o, o + l), release: () => {} };
    }
    let entry = this.#memory.get(key);
    if (entry === undefined) {
      this.#fileLoads++;
      const loaded = readWhole(handle, size);
      const fresh: MemoryEntry = {
        key,
        path,
        refs: 0,
        size,
        loaded,
        buffer: undefined,
        netascii: undefined,
        layouts: new Map(),
      };
      entry = fresh;
      this.#memory.set(key, fresh);
      // A newer version of this path supersedes idle older ones at once.
      for (const other of this.#memory.values()) {
        if (other !== fresh && other.path === path && other.refs === 0)
          this.#memory.delete(other.key);
      }
      loaded.then(
        (b) => {
          fresh.buffer = b;
          fresh.size = b.length;
        },
        () => this.#memory.delete(key),
      );
    }
    return this.#share(entry, mode);
  }

  /** A source on a shared entry: it holds a reference until release(). */
  async #share(entry: MemoryEntry, mode: "octet" | "netascii"): Promise<FileSource> {
    // Touch: move to the most recently used end.
    this.#memory.delete(entry.key);
    this.#memory.set(entry.key, entry);
    entry.refs++;
    let data: Buffer;
    try {
      data = await entry.loaded;
    } catch (err) {
      entry.refs--;
      throw err;
    }
    let bytes = data;
    if (mode === "netascii") {
      entry.netascii ??= toNetascii(data);
      bytes = entry.netascii;
    }
    const held = entry;
    let released = false;
    return {
      size: bytes.length,
      read: (o, l) => bytes.subarray(o, o + l),
      packets: (blksize) => {
        if (blksize < MIN_PACKED_BLKSIZE) return undefined;
        const key = `${mode}:${blksize}`;
        let layout = held.layouts.get(key);
        if (layout === undefined && held.layouts.size < MAX_LAYOUTS_PER_FILE) {
          layout = DataPackets.build(bytes, blksize);
          held.layouts.set(key, layout);
        }
        return layout;
      },
      release: () => {
        if (released) return;
        released = true;
        held.refs--;
        this.#evict();
      },
    };
  }

  #evict(): void {
    let idleBytes = 0;
    for (const e of this.#memory.values()) {
      if (e.refs === 0) idleBytes += entryBytes(e);
    }
    for (const e of this.#memory.values()) {
      if (idleBytes <= this.#opts.cacheMaxBytes) break;
      if (e.refs !== 0 || e.buffer === undefined) continue;
      this.#memory.delete(e.key);
      idleBytes -= entryBytes(e);
    }
  }

  #handleSource(key: string, size: number, handle: FileHandle): FileSource {
    let entry = this.#opts.share ? this.#handles.get(key) : undefined;
    if (entry === undefined) {
      entry = { key, refs: 0, size, handle };
      if (this.#opts.share) this.#handles.set(key, entry);
    } else {
      // Another transfer already holds this file open: use its handle, close ours.
      void this.#close(handle);
    }
    entry.refs++;
    const held = entry;
    let released = false;
    return {
      size,
      read: async (offset, length) => {
        this.#handleReads++;
        const len = Math.max(0, Math.min(length, size - offset));
        const buf = Buffer.allocUnsafe(len);
        let done = 0;
        while (done < len) {
          const { bytesRead } = await held.handle.read(buf, done, len - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        // A file that shrank under us is padded with zeroes rather than desynchronising blocks.
        if (done < len) buf.fill(0, done);
        return buf;
      },
      release: () => {
        if (released) return;
        released = true;
        held.refs--;
        if (held.refs === 0) {
          if (this.#handles.get(held.key) === held) this.#handles.delete(held.key);
          void this.#close(held.handle);
        }
      },
    };
  }
}
