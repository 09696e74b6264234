import { lstat, mkdir, realpath, stat } from "node:fs/promises";
import { basename, extname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type FSWatcher, watch } from "chokidar";
import type { Logger } from "pino";
import { hasOpenWriter } from "../host/open-writers.js";
import { errorText } from "../lib/error-text.js";

/** Extensions of the disk images the drop folder takes; anything else is left alone. */
export const DROP_EXTENSIONS: readonly string[] = [".raw", ".img", ".qcow2", ".vmdk", ".vhdx"];

export interface DropFolderDeps {
  /** The drop folder ([images] import_dir). */
  dir: string;
  /** The library: the drop folder must be on its file system (files are moved, not copied). */
  imagesDir: string;
  /** How long a file's size must hold, with no writer, before it is taken. */
  stableMs: number;
  log: Logger;
  /** Takes a complete file (ImageService.importDropped), which moves it out of the folder. */
  importFile(path: string): Promise<unknown>;
  /** Told when the folder cannot be watched or a file cannot be taken. */
  onProblem?(message: string, detail: Record<string, unknown>): void;
  /** Whether a process still writes the file; /proc by default (host/open-writers.ts). */
  hasWriter?(path: string): Promise<boolean>;
}

/**
 * The drop folder: a disk image copied into it is imported like an upload. It is a folder
 * of its own (by default <images_dir>/import) and not images_dir itself, which holds the
 * library's own files (img-*.raw, uploads being received, versions) that must never be
 * taken for new ones; inside the data folder it is also writable under the unit's
 * ProtectSystem=strict, and on the images' file system, so taking a file is a rename.
 *
 * A file is taken only when it is complete: chokidar reports it once its size held for
 * `stableMs` (awaitWriteFinish), and then no process may hold it open for writing (a copy
 * that pauses longer than the window is still open). Files whose names start with "."
 * (rsync's temp files) and the failed/ subfolder are never looked at. A file is moved
 * out as it is taken, so the startup scan (chokidar's initial add events) finds only files
 * dropped while the daemon was down, and none is imported twice across restarts.
 */
export class DropFolder {
  readonly #d: DropFolderDeps;
  readonly #pending = new Set<string>();
  readonly #closing = new AbortController();
  #watcher: FSWatcher | undefined;

  constructor(deps: DropFolderDeps) {
    this.#d = deps;
  }

  /** Resolves once the folder's present files were seen (their imports start as they settle). */
  async start(): Promise<boolean> {
    const d = this.#d;
    await mkdir(d.dir, { recursive: true, mode: 0o750 });
    const [folder, images] = await Promise.all([stat(d.dir), stat(d.imagesDir)]);
    if (folder.dev !== images.dev) {
      const message = `the image drop folder ${d.dir} is not on the file system of images_dir ${d.imagesDir}: not watched (set [images] import_dir to a folder beside the images)`;
      d.log.error({ dir: d.dir }, message);
      d.onProblem?.(message, { dir: d.dir });
      return false;
    }
    const poll = Math.max(50, Math.min(1000, Math.floor(d.stableMs / 4)));
    // The path the kernel shows in /proc/<pid>/fd, for the open-writer check.
    const dir = await realpath(d.dir);
    const watcher = watch(dir, {
      depth: 0,
      followSymlinks: false,
      ignored: (path) => path !== dir && basename(path).startsWith("."),
      awaitWriteFinish: { stabilityThreshold: d.stableMs, pollInterval: poll },
    });
    this.#watcher = watcher;
    watcher.on("add", (path) => void this.#settle(path, poll));
    watcher.on("error", (err) =>
      d.log.warn({ dir: d.dir, err: errorText(err) }, "image drop folder watch error"),
    );
    await new Promise<void>((resolve) => watcher.once("ready", () => resolve()));
    d.log.info({ dir: d.dir, stable_ms: d.stableMs }, "watching the image drop folder");
    return true;
  }

  async close(): Promise<void> {
    this.#closing.abort();
    await this.#watcher?.close();
  }

  /** Waits out any writer, then hands the file over once. */
  async #settle(path: string, pollMs: number): Promise<void> {
    const d = this.#d;
    if (!DROP_EXTENSIONS.includes(extname(path).toLowerCase())) {
      d.log.info(
        { file: path },
        "not a disk image file name (.raw .img .qcow2 .vmdk .vhdx): left alone",
      );
      return;
    }
    if (this.#pending.has(path)) return;
    this.#pending.add(path);
    const hasWriter = d.hasWriter ?? hasOpenWriter;
    const signal = this.#closing.signal;
    try {
      let sawWriter = false;
      for (;;) {
        const before = await fileKey(path);
        if (before === undefined || signal.aborted) return;
        if (await hasWriter(path)) {
          if (!sawWriter)
            d.log.info({ file: path }, "dropped file still open for writing: waiting");
          sawWriter = true;
          await sleep(pollMs, undefined, { signal });
          continue;
        }
        if (sawWriter) {
          // The writer closed it: the size must hold one more window, in case another opens it.
          await sleep(d.stableMs, undefined, { signal });
          if ((await fileKey(path)) !== before) continue;
          sawWriter = false;
          continue;
        }
        break;
      }
      const st = await lstat(path);
      if (!st.isFile() || st.nlink !== 1) {
        // A link would make the import act on a file outside the folder (qemu-img's
        // files are lent to its user by chown, which follows links).
        const message = `dropped file ${path} is not a plain file (a link or a hard-linked file): copy the image itself`;
        d.log.warn({ file: path }, message);
        d.onProblem?.(message, { file: path });
        return;
      }
      await d.importFile(path);
    } catch (err) {
      if (signal.aborted) return;
      const message = `dropped file ${path} was not taken: ${errorText(err)}`;
      d.log.error({ file: path, err: errorText(err) }, "dropped file not taken");
      d.onProblem?.(message, { file: path });
    } finally {
      this.#pending.delete(path);
    }
  }
}

/** Size and modification time: what changes while a file is written. */
async function fileKey(path: string): Promise<string | undefined> {
  try {
    const st = await stat(path);
    return `${st.size}:${st.mtimeMs}`;
  } catch {
    return undefined;
  }
}
