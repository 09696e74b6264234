import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat, unlink } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Logger } from "pino";
import { checkReserve } from "../diskspace/reserve.js";
import type { EventBus } from "../events/bus.js";
import { runChecked } from "../host/exec.js";
import type { JobContext, JobRunner } from "../jobs/runner.js";
import type { Image, ImageType } from "../store/images.js";
import type { Store } from "../store/index.js";
import type { Job } from "../store/jobs.js";
import { ImageError } from "./errors.js";
import { buildRecipe, StepFailed } from "./recipes/builder.js";
import { type RecipeCatalog, RecipeNotFound, type RecipeSummary } from "./recipes/catalog.js";
import {
  IMAGE_BUILD_JOB,
  IMAGE_IMPORT_STEPS,
  type ImageImportParams,
  type ImageService,
  imageUploadedEvent,
} from "./service.js";

/** What a build job carries: an import's params plus the recipe it builds first. */
export interface ImageBuildParams extends ImageImportParams {
  recipe: string;
}

export interface BuildRequest {
  recipe: string;
  name: string;
  description?: string;
  image_type?: ImageType;
  userId: number | null;
}

export interface ImageBuildServiceDeps {
  store: Store;
  runner: JobRunner;
  images: ImageService;
  catalog: RecipeCatalog;
  imagesDir: string;
  log: Logger;
  bus?: EventBus;
  /** Bounds one build (the lock wait and every step); the builder's default otherwise. */
  timeoutMs?: number;
  /** `[storage] reserve_percent`: the copy into images_dir may not go below it. */
  reservePercent?: number;
}

/** Share of the job's progress for the recipe's steps; the copy and the import share the rest. */
const STEPS_SHARE = 80;
const COPY_SHARE = 5;

/**
 * Golden images built from the recipes installed on this server (GoldenPipe's build
 * status): a job whose steps are the recipe's steps, then "copy" (the cached output into
 * images_dir, with its checksums) and the upload's import steps, so a built image is
 * registered exactly as an uploaded one. A failed or cancelled build leaves the image
 * `error` with the step named and no file of it in images_dir.
 */
export class ImageBuildService {
  readonly #d: ImageBuildServiceDeps;

  constructor(deps: ImageBuildServiceDeps) {
    this.#d = deps;
    deps.runner.register(IMAGE_BUILD_JOB, (p, ctx) => this.#run(p as ImageBuildParams, ctx));
  }

  /** The installed recipes, each with whether its build is cached. */
  recipes(): RecipeSummary[] {
    const { recipes, broken } = this.#d.catalog.list();
    for (const b of broken)
      this.#d.log.warn({ recipe: b.name, reason: b.reason }, "recipe skipped");
    return recipes;
  }

  /** Starts a build: the image row (`processing`) and its job, or an ImageError. */
  build(req: BuildRequest): { image: Image; job: Job } {
    const d = this.#d;
    let steps: string[];
    try {
      steps = d.catalog.get(req.recipe).steps.map((s) => s.id);
    } catch (err) {
      if (err instanceof RecipeNotFound) {
        throw new ImageError("not_found", err.message, { field: "recipe" });
      }
      throw err;
    }
    if (d.store.images.nameTaken(req.name)) {
      throw new ImageError("name_taken", `an image named ${JSON.stringify(req.name)} exists`, {
        field: "name",
      });
    }
    const { image, job } = d.store.transaction(() => {
      const image = d.store.images.create({
        name: req.name,
        description: req.description ?? "",
        image_type: req.image_type ?? "system",
        filename: `${req.recipe}.raw`,
        format: "unknown",
        size_bytes: 0,
        status: "processing",
        created_by: req.userId,
      });
      const params: ImageBuildParams = {
        image_id: image.id,
        source: `img-${randomUUID()}.upload`,
        recipe: req.recipe,
      };
      const job = d.runner.submit(IMAGE_BUILD_JOB, params, {
        createdBy: req.userId,
        steps: [...steps, "copy", ...IMAGE_IMPORT_STEPS],
      });
      return { image, job };
    });
    d.bus?.publish("image_uploaded", imageUploadedEvent(image, job));
    d.log.info({ image_id: image.id, recipe: req.recipe, job_id: job.id }, "image build queued");
    return { image, job };
  }

  async #run(p: ImageBuildParams, ctx: JobContext): Promise<unknown> {
    const d = this.#d;
    const images = d.store.images;
    const src = join(d.imagesDir, basename(p.source));
    let step = "the start";
    let importing = false;
    try {
      const recipe = d.catalog.get(p.recipe);
      const count = recipe.steps.length;
      const built = await buildRecipe(recipe, {
        cacheDir: d.catalog.opts.cacheDir,
        ...(d.catalog.opts.aptDir ? { aptDir: d.catalog.opts.aptDir } : {}),
        signal: ctx.signal,
        ...(d.timeoutMs ? { timeoutMs: d.timeoutMs } : {}),
        runStep: (s, _i, fn) => {
          step = `step ${s.id} (${s.script})`;
          return ctx.step(s.id, fn);
        },
        onCached: (path, hash) => {
          for (const s of recipe.steps) ctx.skip(s.id, `cached (recipe ${hash})`);
          ctx.log("info", `cached: ${basename(path)} is this recipe's build; no step runs`);
        },
        onProgress: (pr) =>
          ctx.progress(
            ((pr.index + pr.percent / 100) / count) * STEPS_SHARE,
            pr.percent > 0 && pr.percent < 100 ? `${pr.step.id}: ${pr.message}` : undefined,
          ),
        onLine: (s, _stream, line) => ctx.log("info", `${s.id}: ${line}`),
        log: (m) => ctx.log("info", m),
      });
      ctx.progress(
        STEPS_SHARE,
        built.built ? `built in ${Math.round(built.seconds)} s` : undefined,
      );

      step = "copy";
      await ctx.step("copy", async () => {
        if (d.reservePercent !== undefined) {
          // What the copy allocates: the cached file's blocks (it is sparse).
          const need = (await stat(built.path)).blocks * 512;
          const r = await checkReserve(d.imagesDir, d.reservePercent, need);
          if (!r.ok) throw new Error(r.reason);
        }
        // Its own file: the cache may replace its copy when the recipe changes.
        await runChecked("cp", ["--reflink=auto", "--sparse=always", built.path, src], {
          signal: ctx.signal,
          timeoutMs: 60 * 60_000,
          killGraceMs: 0,
        });
        const sums = await checksums(src, ctx.signal);
        images.update(p.image_id, {
          filename: basename(built.path),
          size_bytes: (await stat(src)).size,
          checksum_md5: sums.md5,
          checksum_sha256: sums.sha256,
        });
        ctx.log("info", `sha256 ${sums.sha256}`);
      });
      ctx.progress(STEPS_SHARE + COPY_SHARE);

      importing = true;
      const rest = 100 - STEPS_SHARE - COPY_SHARE;
      const result = await d.images.importFile(
        {
          image_id: p.image_id,
          source: p.source,
          note: `built from recipe ${recipe.name} (${built.hash})`,
        },
        {
          ...ctx,
          progress: (pct, message) =>
            ctx.progress(STEPS_SHARE + COPY_SHARE + (pct * rest) / 100, message),
        },
      );
      return { ...(result as object), recipe: recipe.name, hash: built.hash, cached: !built.built };
    } catch (err) {
      // The import marks the image and removes its files itself.
      if (!importing) {
        const reason = ctx.signal.aborted
          ? `build cancelled during ${step}`
          : err instanceof StepFailed
            ? `build failed: ${err.message}`
            : `build failed in ${step}: ${err instanceof Error ? err.message : String(err)}`;
        images.update(p.image_id, { status: "error", status_reason: reason.slice(0, 2000) });
        await unlink(src).catch(() => {});
      }
      throw err;
    }
  }
}

/** md5 and sha256 of a file in one read, as an upload records them. */
function checksums(path: string, signal: AbortSignal): Promise<{ md5: string; sha256: string }> {
  return new Promise((resolve, reject) => {
    const md5 = createHash("md5");
    const sha256 = createHash("sha256");
    const s = createReadStream(path, { highWaterMark: 1 << 20, signal });
    s.on("data", (chunk) => {
      md5.update(chunk);
      sha256.update(chunk);
    });
    s.once("error", reject);
    s.once("end", () => resolve({ md5: md5.digest("hex"), sha256: sha256.digest("hex") }));
  });
}
