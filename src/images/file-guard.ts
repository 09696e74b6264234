import { basename } from "node:path";
import { type FSWatcher, watch } from "chokidar";
import type { Logger } from "pino";
import { errorText } from "../lib/error-text.js";
import type { Image } from "../store/images.js";

export interface ImageFileGuardDeps {
  imagesDir: string;
  log: Logger;
  /** ImageService.markFileLost: the ready image whose current file this was, now `error`. */
  markFileLost(path: string): Image | undefined;
  /** ImageService.checkFiles: the same for files removed while the daemon was down. */
  checkFiles(): Promise<Image[]>;
  /** Told for each image that lost its file (the daemon raises an alert). */
  onLost?(image: Image): void;
}

/**
 * Notices a library file removed under a `ready` image (by hand, by a backup restore that
 * left it out): the image becomes `error` with the reason at once, instead of the next
 * machine that needs a fresh overlay failing with "no such file". Only images_dir's own
 * level is watched; the library's files are all there.
 */
export class ImageFileGuard {
  readonly #d: ImageFileGuardDeps;
  #watcher: FSWatcher | undefined;

  constructor(deps: ImageFileGuardDeps) {
    this.#d = deps;
  }

  async start(): Promise<void> {
    const d = this.#d;
    const watcher = watch(d.imagesDir, {
      depth: 0,
      ignoreInitial: true,
      followSymlinks: false,
      // Uploads being received (.upload-*.part) come and go all the time.
      ignored: (path) => path !== d.imagesDir && basename(path).startsWith("."),
    });
    this.#watcher = watcher;
    watcher.on("unlink", (path) => {
      const image = d.markFileLost(path);
      if (image) d.onLost?.(image);
    });
    watcher.on("error", (err) =>
      d.log.warn({ dir: d.imagesDir, err: errorText(err) }, "image folder watch error"),
    );
    await new Promise<void>((resolve) => watcher.once("ready", () => resolve()));
    for (const image of await d.checkFiles()) d.onLost?.(image);
  }

  async close(): Promise<void> {
    await this.#watcher?.close();
  }
}
