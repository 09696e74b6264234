import { randomUUID } from "node:crypto";
import { rename, statfs, unlink } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { z } from "zod";
import { checkReserve } from "../diskspace/reserve.js";
import type { EventBus } from "../events/bus.js";
import type { JobContext, JobRunner } from "../jobs/runner.js";
import type { Image, ImageType } from "../store/images.js";
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
import { receiveUpload } from "./upload.js";

export const IMAGE_IMPORT_JOB = "image_import";
export const IMAGE_IMPORT_STEPS = ["inspect", "check", "convert", "finalize"] as const;

/** What an import job carries: the row and the uploaded file it turns into a raw image. */
export interface ImageImportParams {
  image_id: number;
  /** File name (not path) of the uploaded bytes inside images_dir. */
  source: string;
}

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
    deps.runner.register(IMAGE_IMPORT_JOB, (p, ctx) => this.#import(p as ImageImportParams, ctx));
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
      const source = `img-${randomUUID()}.upload`;
      await rename(got.tempPath, join(d.imagesDir, source));
      this.#liveTemps.delete(got.tempPath);
      let image: Image;
      let job: Job;
      try {
        ({ image, job } = d.store.transaction(() => {
          const image = d.store.images.create({
            name: f.name,
            description: f.description,
            image_type: f.image_type as ImageType,
            filename: got.clientFilename,
            format: "unknown",
            size_bytes: got.bytes,
            status: "processing",
            checksum_md5: got.md5,
            checksum_sha256: got.sha256,
            created_by: req.userId,
          });
          const params: ImageImportParams = { image_id: image.id, source };
          const job = d.runner.submit(IMAGE_IMPORT_JOB, params, {
            createdBy: req.userId,
            steps: IMAGE_IMPORT_STEPS,
          });
          return { image, job };
        }));
      } catch (err) {
        await unlink(join(d.imagesDir, source)).catch(() => {});
        if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") {
          throw new ImageError("name_taken", `an image named ${JSON.stringify(f.name)} exists`, {
            field: "name",
          });
        }
        throw err;
      }
      d.bus?.publish("image_uploaded", {
        image_id: image.id,
        name: image.name,
        format: image.format,
        size_bytes: image.size_bytes,
        status: image.status,
        job_id: job.id,
      });
      d.log.info(
        { image_id: image.id, bytes: got.bytes, sha256: got.sha256, job_id: job.id },
        "image uploaded",
      );
      return { image, job };
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
  failInterruptedImports(): number[] {
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
    return failed;
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
    const jobs = this.#d.store.jobs.unfinished(IMAGE_IMPORT_JOB);
    return jobs.map((job) => ({ job, params: JSON.parse(job.params) as ImageImportParams }));
  }

  async #import(p: ImageImportParams, ctx: JobContext): Promise<unknown> {
    const d = this.#d;
    const images = d.store.images;
    const src = join(d.imagesDir, basename(p.source));
    const dest = rawNameFor(src);
    const partial = `${dest}.part`;
    const q = { ...d.qemu, signal: ctx.signal };
    try {
      const info: ImageInfo = await ctx.step("inspect", () => probeImage(src, q));
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
            note: `imported from ${image.filename} (${info.format})`,
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
      for (const f of [partial, dest, src]) await unlink(f).catch(() => {});
      throw err;
    }
  }
}

function rawNameFor(src: string): string {
  return src.replace(/\.upload$/, ".raw");
}

async function freeBytesOf(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}
