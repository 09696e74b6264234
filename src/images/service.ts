import { createHash, randomUUID } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, renameSync } from "node:fs";
import { mkdir, rename, stat, statfs, unlink } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import * as z from "zod";
import { checkReserve } from "../diskspace/reserve.js";
import type { EventBus, EventPayloads } from "../events/bus.js";
import type { JobContext, JobRunner } from "../jobs/runner.js";
import type { Image, ImageFormat, ImageType } from "../store/images.js";
import type { Store } from "../store/index.js";
import type { Job } from "../store/jobs.js";
import { ImageError } from "./errors.js";
import {
  checkImage,
  convertToRaw,
  type ImageInfo,
  ImageRejected,
  probeImage,
  type QemuImgOptions,
} from "./qemu-img.js";
import { receiveUpload, safeDisplayName } from "./upload.js";

export const IMAGE_IMPORT_JOB = "image_import";
export const IMAGE_IMPORT_STEPS = ["inspect", "check", "convert", "finalize"] as const;
/**
 * A recipe build (./build.ts): its params are ImageImportParams too, and it ends with the
 * same import, so its files and image count as being imported while it runs.
 */
export const IMAGE_BUILD_JOB = "image_build";

/** What an import job carries: the row and the uploaded file it turns into a raw image. */
export interface ImageImportParams {
  image_id: number;
  /** File name (not path) of the uploaded bytes inside images_dir. */
  source: string;
  /** The first version's note; "imported from <filename> (<format>)" by default. */
  note?: string;
  /**
   * Set when the file came through the drop folder: its name there. A failed import moves
   * it to the drop folder's failed/ (it is the admin's file) instead of removing it.
   */
  dropped?: string;
}

/** Where a dropped file that could not be imported is put back, inside the drop folder. */
export const DROP_FAILED_DIR = "failed";

export const INTERRUPTED_IMPORT = "the daemon stopped during import; upload again";

export const IMAGE_TYPES = ["system", "game", "data", "template"] as const;

const uploadFields = z.object({
  name: z.string().trim().min(1, "name is required").max(200),
  description: z.string().max(2000).default(""),
  image_type: z.enum(IMAGE_TYPES).default("system"),
});

export const imagePatchSchema = z
  .object({
    name: z.string().trim().min(1).max(200),
    description: z.string().max(2000),
    image_type: z.enum(IMAGE_TYPES),
  })
  .partial()
  .strict();
export type ImagePatch = z.infer<typeof imagePatchSchema>;

export interface ImageServiceDeps {
  store: Store;
  runner: JobRunner;
  log: Logger;
  bus?: EventBus;
  imagesDir: string;
  maxUploadBytes: number;
  /**
   * Percent of the images' file system kept free for running machines' overlays
   * (`[storage] reserve_percent`): an upload that would go below it is refused (507).
   */
  reservePercent?: number;
  qemu?: QemuImgOptions;
  /** Free bytes of a folder; statfs by default, a test can shrink it. */
  freeBytes?: (dir: string) => Promise<number>;
  /** The drop folder ([images] import_dir), where failed dropped files go back to. */
  importDir?: string;
}

/** What registering a file as a new image needs, whether it was uploaded or dropped. */
interface NewImport {
  name: string;
  description: string;
  image_type: ImageType;
  /** The name shown for where it came from (the client's or the dropped file's). */
  filename: string;
  bytes: number;
  /** Known for an upload (hashed as it arrived); a dropped file is hashed by the job. */
  md5: string | null;
  sha256: string | null;
  userId: number | null;
  /** Our name for the bytes inside images_dir. */
  source: string;
  dropped?: string;
}

export interface UploadRequest {
  headers: Record<string, string | undefined>;
  body: Readable | ReadableStream<Uint8Array>;
  userId: number | null;
}

/**
 * Images from upload to `ready`: the bytes are streamed to a temp file, and only a complete
 * file becomes a row (status `processing`); an import job then inspects it, checks it,
 * converts it to raw when needed and records it as the image's first version (`ready`), or
 * ends it `error` with the reason. Stored files are named by us (img-<uuid>.*), never by
 * the client.
 */
export class ImageService {
  readonly #d: ImageServiceDeps;
  readonly #liveTemps = new Set<string>();

  constructor(deps: ImageServiceDeps) {
    this.#d = deps;
    deps.runner.register(IMAGE_IMPORT_JOB, (p, ctx) =>
      this.importFile(p as ImageImportParams, ctx),
    );
  }

  async upload(req: UploadRequest): Promise<{ image: Image; job: Job }> {
    const d = this.#d;
    let temp = "";
    const got = await receiveUpload({
      headers: req.headers,
      body: req.body,
      dir: d.imagesDir,
      maxBytes: d.maxUploadBytes,
      ...(d.reservePercent !== undefined
        ? { spaceBytes: await this.#spaceBeforeReserve(d.reservePercent) }
        : {}),
      onTempFile: (p) => {
        if (p) {
          temp = p;
          this.#liveTemps.add(p);
        } else this.#liveTemps.delete(temp);
      },
    });
    try {
      const parsed = uploadFields.safeParse(got.fields);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        const field = String(issue.path[0] ?? "form");
        throw new ImageError("invalid_upload", `${field}: ${issue.message}`, { field });
      }
      const f = parsed.data;
      if (d.store.images.nameTaken(f.name)) {
        throw new ImageError("name_taken", `an image named ${JSON.stringify(f.name)} exists`, {
          field: "name",
        });
      }
      const source = newSourceName();
      await rename(got.tempPath, join(d.imagesDir, source));
      this.#liveTemps.delete(got.tempPath);
      let registered: { image: Image; job: Job };
      try {
        registered = this.#register({
          name: f.name,
          description: f.description,
          image_type: f.image_type as ImageType,
          filename: got.clientFilename,
          bytes: got.bytes,
          md5: got.md5,
          sha256: got.sha256,
          userId: req.userId,
          source,
        });
      } catch (err) {
        await unlink(join(d.imagesDir, source)).catch(() => {});
        throw err;
      }
      d.log.info(
        {
          image_id: registered.image.id,
          bytes: got.bytes,
          sha256: got.sha256,
          job_id: registered.job.id,
        },
        "image uploaded",
      );
      return registered;
    } catch (err) {
      await unlink(got.tempPath).catch(() => {});
      this.#liveTemps.delete(got.tempPath);
      throw err;
    }
  }

  /** How much an upload may write before the free-space reserve, and what to say past it. */
  async #spaceBeforeReserve(percent: number): Promise<{ bytes: number; reason: string }> {
    const r = await checkReserve(this.#d.imagesDir, percent, 0);
    const bytes = Math.max(0, r.free_bytes - r.reserve_bytes);
    const probe = await checkReserve(this.#d.imagesDir, percent, bytes + 1);
    return { bytes, reason: probe.reason ?? "the free-space reserve would be crossed" };
  }

  /**
   * The row (`processing`) and its import job, in one transaction, then the
   * image_uploaded event. A name another image has since taken is `name_taken`.
   */
  #register(n: NewImport): { image: Image; job: Job } {
    const d = this.#d;
    let image: Image;
    let job: Job;
    try {
      ({ image, job } = d.store.transaction(() => {
        const image = d.store.images.create({
          name: n.name,
          description: n.description,
          image_type: n.image_type,
          filename: n.filename,
          format: "unknown",
          size_bytes: n.bytes,
          status: "processing",
          checksum_md5: n.md5,
          checksum_sha256: n.sha256,
          created_by: n.userId,
        });
        const params: ImageImportParams = {
          image_id: image.id,
          source: n.source,
          ...(n.dropped !== undefined ? { dropped: n.dropped } : {}),
        };
        const job = d.runner.submit(IMAGE_IMPORT_JOB, params, {
          createdBy: n.userId,
          steps: IMAGE_IMPORT_STEPS,
        });
        return { image, job };
      }));
    } catch (err) {
      if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") {
        throw new ImageError("name_taken", `an image named ${JSON.stringify(n.name)} exists`, {
          field: "name",
        });
      }
      throw err;
    }
    d.bus?.publish("image_uploaded", imageUploadedEvent(image, job));
    return { image, job };
  }

  /**
   * A file the drop folder found complete: it becomes an image named after the file (a
   * name already taken gets " (2)", " (3)", ...: a drop has nobody to ask), and is moved
   * into images_dir under our name right after its row and job are committed, before the
   * job can start. The job then hashes, inspects, checks and converts it like an upload.
   */
  async importDropped(path: string): Promise<{ image: Image; job: Job }> {
    const d = this.#d;
    const st = await stat(path);
    const dropped = basename(path);
    const source = newSourceName();
    const registered = this.#register({
      name: this.#freeName(imageNameFromFile(dropped)),
      description: `dropped into the import folder as ${dropped}`,
      image_type: "system",
      filename: safeDisplayName(dropped),
      bytes: st.size,
      md5: null,
      sha256: null,
      userId: null,
      source,
      dropped,
    });
    const { image, job } = registered;
    try {
      // Synchronous: the job is queued but starts only after this tick.
      renameSync(path, join(d.imagesDir, source));
    } catch (err) {
      const reason = `the dropped file could not be moved into the image folder: ${(err as Error).message}`;
      d.store.images.update(image.id, { status: "error", status_reason: reason });
      d.runner.cancel(job.id);
      throw new ImageRejected(reason);
    }
    d.store.history.record({
      resource_type: "image",
      resource_id: String(image.id),
      operation: "import_dropped",
      status: "success",
      detail: { file: dropped, bytes: st.size, job_id: job.id },
    });
    d.log.info(
      { image_id: image.id, name: image.name, file: path, bytes: st.size, job_id: job.id },
      "dropped image file taken for import",
    );
    return registered;
  }

  /** `base`, or the first of "base (2)", "base (3)", ... no image has. */
  #freeName(base: string): string {
    if (!this.#d.store.images.nameTaken(base)) return base;
    for (let i = 2; ; i++) {
      const name = `${base.slice(0, 190)} (${i})`;
      if (!this.#d.store.images.nameTaken(name)) return name;
    }
  }

  /**
   * A file of the library went away under a `ready` image (removed by hand, a disk
   * replaced): the image becomes `error` with the reason, since no new overlay can be
   * made from it. Returns the image when one was affected. Targets already running keep
   * the file open and serve on until they are reset.
   */
  markFileLost(path: string): Image | undefined {
    const d = this.#d;
    const hit = d.store.images.currentFiles().find((f) => f.path === path);
    if (!hit) return undefined;
    const image = d.store.images.get(hit.image_id);
    if (image?.status !== "ready") return undefined;
    const reason = `its file ${path} (version ${hit.version}) was removed from the image folder; restore the file or import the image again`;
    d.store.images.update(image.id, { status: "error", status_reason: reason });
    d.store.history.record({
      resource_type: "image",
      resource_id: String(image.id),
      operation: "file_lost",
      status: "failure",
      detail: { path, version: hit.version },
    });
    d.log.error({ image_id: image.id, name: image.name, path }, "image file removed");
    return d.store.images.get(image.id);
  }

  /** At start: ready images whose current file in images_dir is gone (removed while down). */
  async checkFiles(): Promise<Image[]> {
    const lost: Image[] = [];
    for (const f of this.#d.store.images.currentFiles()) {
      if (!f.path.startsWith(`${this.#d.imagesDir}/`)) continue;
      const missing = await stat(f.path).then(
        () => false,
        (err: NodeJS.ErrnoException) => err.code === "ENOENT",
      );
      if (!missing) continue;
      const image = this.markFileLost(f.path);
      if (image) lost.push(image);
    }
    return lost;
  }

  update(id: number, patch: ImagePatch): Image {
    const image = this.get(id);
    if (patch.name !== undefined && patch.name.toLowerCase() !== image.name.toLowerCase()) {
      if (this.#d.store.images.nameTaken(patch.name, id)) {
        throw new ImageError("name_taken", `an image named ${JSON.stringify(patch.name)} exists`, {
          field: "name",
        });
      }
    }
    return this.#d.store.images.update(id, patch)!;
  }

  get(id: number): Image {
    const image = this.#d.store.images.get(id);
    if (!image) throw new ImageError("not_found", `no image ${id}`);
    return image;
  }

  /** The file a target serves for an image: its current version's raw file. */
  currentPath(id: number): string | undefined {
    const img = this.#d.store.images.get(id);
    if (!img?.current_version) return undefined;
    return this.#d.store.images.versions(id).find((v) => v.version === img.current_version)?.path;
  }

  /**
   * Refused (409) while a target uses the image or while it is being imported; otherwise
   * the row goes first (so nothing new can reference it) and then its files.
   */
  async delete(id: number): Promise<void> {
    const d = this.#d;
    const image = this.get(id);
    const using = d.store.targets.usingImage(id);
    if (using > 0) {
      throw new ImageError("in_use", `image ${id} is used by ${using} target(s)`, {
        targets: using,
      });
    }
    const job = this.activeImportJob(id);
    if (job) {
      throw new ImageError(
        "in_use",
        `image ${id} is being processed by job ${job.id}; cancel the job first`,
        { job_id: job.id },
      );
    }
    const files = d.store.images.versions(id).map((v) => v.path);
    d.store.images.delete(id);
    for (const f of files) {
      await unlink(f).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT")
          d.log.warn({ path: f, err: err.message }, "cannot remove image file");
      });
    }
    d.log.info({ image_id: id, name: image.name }, "image deleted");
  }

  /**
   * At start, after the job runner's recovery: an image left `uploading` or `processing`
   * with no import job still to run was being imported by a process that is gone. It
   * becomes `error` with a reason, instead of `processing` for ever.
   */
  failInterruptedImports(interruptedJobIds: readonly number[] = []): number[] {
    const failed: number[] = [];
    for (const image of this.#d.store.images.unfinished()) {
      if (this.activeImportJob(image.id)) continue;
      this.#d.store.images.update(image.id, {
        status: "error",
        status_reason: INTERRUPTED_IMPORT,
      });
      failed.push(image.id);
    }
    if (failed.length) this.#d.log.warn({ images: failed }, INTERRUPTED_IMPORT);
    this.#returnInterruptedDrops(interruptedJobIds);
    return failed;
  }

  /**
   * An import of a dropped file that the process died in (the runner failed its job at
   * start): its file goes back to the drop folder's failed/ before the sweep of dead
   * uploads could remove it, since it is the admin's. Synchronous: nothing runs yet.
   */
  #returnInterruptedDrops(jobIds: readonly number[]): void {
    const d = this.#d;
    if (!d.importDir) return;
    for (const id of jobIds) {
      const job = d.store.jobs.get(id);
      if (job?.type !== IMAGE_IMPORT_JOB) continue;
      const p = JSON.parse(job.params) as ImageImportParams;
      if (p.dropped === undefined) continue;
      const src = join(d.imagesDir, basename(p.source));
      // A raw image is renamed to its final name before it is recorded as a version.
      const candidates = [src, rawNameFor(src)];
      const versions = new Set(d.store.images.versionPaths());
      const left = candidates.find((f) => existsSync(f) && !versions.has(f));
      if (!left) continue;
      const dir = join(d.importDir, DROP_FAILED_DIR);
      try {
        mkdirSync(dir, { recursive: true, mode: 0o750 });
        const target = freeTargetSync(dir, basename(p.dropped));
        renameSync(left, target);
        d.store.images.update(p.image_id, {
          status: "error",
          status_reason: `the daemon stopped during import; the file is back in ${target}: move it into the drop folder to try again`,
        });
        d.log.warn(
          { image_id: p.image_id, file: target },
          "interrupted drop import: file put back",
        );
      } catch (err) {
        d.log.warn(
          { image_id: p.image_id, file: left, err: (err as Error).message },
          "cannot put the file of an interrupted drop import back",
        );
      }
    }
  }

  activeImportJob(imageId: number): Job | undefined {
    return this.#importJobs().find((j) => j.params.image_id === imageId)?.job;
  }

  /**
   * Files in images_dir that belong to something live: every version's file, the source and
   * partial output of imports not yet finished, and uploads being received right now.
   */
  referencedFiles(): Set<string> {
    const d = this.#d;
    const out = new Set<string>();
    for (const path of d.store.images.versionPaths()) out.add(path);
    for (const path of d.store.targetSnapshots.paths()) out.add(path);
    for (const { params } of this.#importJobs()) {
      const src = join(d.imagesDir, basename(params.source));
      out.add(src);
      out.add(rawNameFor(src));
      out.add(`${rawNameFor(src)}.part`);
    }
    for (const t of this.#liveTemps) out.add(t);
    return out;
  }

  #importJobs(): { job: Job; params: ImageImportParams }[] {
    const jobs = [IMAGE_IMPORT_JOB, IMAGE_BUILD_JOB].flatMap((type) =>
      this.#d.store.jobs.unfinished(type),
    );
    return jobs.map((job) => ({ job, params: JSON.parse(job.params) as ImageImportParams }));
  }

  /**
   * The import steps (inspect, check, convert, finalize) of a file in images_dir, inside
   * the job that calls it: an upload's own job, or a build's after its recipe steps. The
   * image row ends `ready` with its first version, or `error` with nothing left on disk.
   */
  async importFile(p: ImageImportParams, ctx: JobContext): Promise<unknown> {
    const d = this.#d;
    const images = d.store.images;
    const src = join(d.imagesDir, basename(p.source));
    const dest = rawNameFor(src);
    const partial = `${dest}.part`;
    const q = { ...d.qemu, signal: ctx.signal };
    try {
      const info: ImageInfo = await ctx.step("inspect", async () => {
        if (images.get(p.image_id)?.checksum_sha256 === null) {
          // A dropped file was not hashed on its way in, as an upload is.
          const sums = await hashFile(src, ctx.signal);
          images.update(p.image_id, { checksum_md5: sums.md5, checksum_sha256: sums.sha256 });
          ctx.log("info", `sha256 ${sums.sha256}`);
        }
        const found = await probeImage(src, q);
        if (p.dropped !== undefined) checkDroppedFormat(p.dropped, found.format);
        return found;
      });
      images.update(p.image_id, { format: info.format, virtual_size_bytes: info.virtualSize });
      ctx.log("info", `format ${info.format}, virtual size ${info.virtualSize} bytes`);
      ctx.progress(5);
      await ctx.step("check", () => checkImage(src, info.format, q));
      ctx.progress(10);
      if (info.format === "raw") {
        ctx.skip("convert", "already raw");
        await rename(src, dest);
      } else {
        await ctx.step("convert", async () => {
          const free = await (d.freeBytes ?? freeBytesOf)(d.imagesDir);
          if (free < info.actualSize) {
            throw new ImageRejected(
              `not enough free space to convert: ${info.actualSize} bytes of data, ${free} bytes free`,
            );
          }
          await convertToRaw(src, info.format, partial, {
            ...q,
            onProgress: (pct) => ctx.progress(10 + pct * 0.85),
          });
          await rename(partial, dest);
          await unlink(src).catch(() => {});
        });
      }
      const image = images.get(p.image_id)!;
      await ctx.step("finalize", async () => {
        d.store.transaction(() => {
          images.addVersion(p.image_id, {
            path: dest,
            size_bytes: info.virtualSize,
            // The upload's checksum is the raw file's only when nothing was converted.
            checksum_sha256: info.format === "raw" ? image.checksum_sha256 : null,
            note: p.note ?? `imported from ${image.filename} (${info.format})`,
          });
          images.update(p.image_id, { status: "ready", status_reason: null });
        });
      });
      return { image_id: p.image_id, format: info.format, path: dest };
    } catch (err) {
      const reason = ctx.signal.aborted
        ? "import cancelled"
        : err instanceof Error
          ? err.message
          : String(err);
      images.update(p.image_id, { status: "error", status_reason: reason });
      // A failed import keeps nothing on disk: an image in `error` is kept only as a record.
      // A dropped file is the admin's own, though: it goes to the drop folder's failed/.
      if (p.dropped !== undefined && d.importDir) {
        await this.#returnDropped(src, p.dropped).catch((e: Error) =>
          d.log.warn({ file: src, err: e.message }, "cannot put a failed dropped file back"),
        );
      }
      for (const f of [partial, dest, src]) await unlink(f).catch(() => {});
      throw err;
    }
  }

  /** Moves a failed drop's source to <import_dir>/failed/<its name>, never over another file. */
  async #returnDropped(src: string, dropped: string): Promise<void> {
    const dir = join(this.#d.importDir!, DROP_FAILED_DIR);
    await mkdir(dir, { recursive: true, mode: 0o750 });
    const target = freeTargetSync(dir, basename(dropped));
    await rename(src, target);
    this.#d.log.warn({ file: target }, "dropped file not imported: moved to the failed folder");
  }
}

/** `dir/name`, or `dir/stem.2.ext`, `dir/stem.3.ext`, ... whichever does not exist yet. */
function freeTargetSync(dir: string, name: string): string {
  const ext = extname(name);
  const stem = ext ? name.slice(0, -ext.length) : name;
  for (let i = 1; ; i++) {
    const target = join(dir, i === 1 ? name : `${stem}.${i}${ext}`);
    if (!existsSync(target)) return target;
  }
}

/**
 * A dropped file has only its name to say what it is: one named for a container format
 * that qemu-img reads as another (a half-copied or mislabelled qcow2 reads as raw bytes)
 * is refused rather than imported as a disk of garbage. .raw and .img take what comes.
 */
function checkDroppedFormat(file: string, found: ImageFormat): void {
  const named = extname(file).toLowerCase().slice(1);
  if (!["qcow2", "vmdk", "vhdx"].includes(named) || named === found) return;
  throw new ImageRejected(
    `the file is named .${named} but qemu-img reads it as ${found}: not a complete ${named} image`,
  );
}

function newSourceName(): string {
  return `img-${randomUUID()}.upload`;
}

/** An image name from a dropped file's name: without its extension, shown safely. */
export function imageNameFromFile(file: string): string {
  const shown = safeDisplayName(file);
  const ext = extname(shown);
  const stem = (ext && ext !== shown ? shown.slice(0, -ext.length) : shown).trim();
  return (stem || "dropped image").slice(0, 200);
}

async function hashFile(
  path: string,
  signal: AbortSignal,
): Promise<{ md5: string; sha256: string }> {
  const md5 = createHash("md5");
  const sha256 = createHash("sha256");
  for await (const chunk of createReadStream(path, { signal })) {
    md5.update(chunk as Buffer);
    sha256.update(chunk as Buffer);
  }
  return { md5: md5.digest("hex"), sha256: sha256.digest("hex") };
}

function rawNameFor(src: string): string {
  return src.replace(/\.upload$/, ".raw");
}

async function freeBytesOf(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** The image_uploaded event of a new image row and the job that imports (or builds) it. */
export function imageUploadedEvent(image: Image, job: Job): EventPayloads["image_uploaded"] {
  return {
    image_id: image.id,
    name: image.name,
    format: image.format,
    size_bytes: image.size_bytes,
    status: image.status,
    job_id: job.id,
  };
}
