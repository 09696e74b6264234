import { z } from "zod";
import { STORAGE_CLEANUP_JOB } from "../../diskspace/cleanup.js";
import { storageHealth, storageInfo } from "../../diskspace/usage.js";
import { ApiError } from "../errors.js";
import { ADMIN_ONLY, type ApiDeps, defineRoute, READERS, type RouteModule } from "../route.js";

declare module "../route.js" {
  interface ApiServices {
    /** Where storage is reported from; without it, the app's folders are used. */
    storage?: {
      imagesDir: string;
      /** The file system reported as system_storage ("/" as in the GGnet example). */
      systemPath?: string;
      /** Folders /storage/health checks (default: every folder of the app). */
      healthDirs?: readonly string[];
      warnPercent?: number;
      criticalPercent?: number;
    };
  }
}

function imagesDir(deps: ApiDeps): string {
  const d = deps.services.storage?.imagesDir ?? deps.directories.images ?? deps.directories.data;
  if (!d) throw new ApiError(503, "service_unavailable", "no image folder is configured");
  return d;
}

const cleanupBody = z
  .object({
    /** Lists what would go without removing anything: the default, so nothing goes by accident. */
    dry_run: z.boolean().default(true),
  })
  .strict()
  .default({ dry_run: true });

/** /api/storage: usage and health of the folders, and the orphaned-file cleanup job. */
export const storageRoutes: RouteModule = (deps) => [
  defineRoute({
    method: "GET",
    path: "/storage/info",
    tag: "storage",
    summary: "Storage usage of the upload, image and system file systems",
    roles: READERS,
    handler: () =>
      storageInfo({
        imagesDir: imagesDir(deps),
        systemPath: deps.services.storage?.systemPath ?? "/",
      }),
  }),
  defineRoute({
    method: "GET",
    path: "/storage/health",
    tag: "storage",
    summary: "Whether each folder exists, is writable and has room (worst status overall)",
    roles: READERS,
    // 200 whatever the status: the body says it, and a monitor reads the body.
    handler: () => {
      const s = deps.services.storage;
      const dirs = [...new Set(s?.healthDirs ?? Object.values(deps.directories))];
      return storageHealth(dirs, {
        clock: deps.clock,
        ...(s?.warnPercent !== undefined ? { warnPercent: s.warnPercent } : {}),
        ...(s?.criticalPercent !== undefined ? { criticalPercent: s.criticalPercent } : {}),
      });
    },
  }),
  defineRoute({
    method: "POST",
    path: "/storage/cleanup",
    tag: "storage",
    summary:
      "Remove orphaned image files, dead uploads and overlays no target uses, as a job (dry_run true by default)",
    roles: ADMIN_ONLY,
    resource: "storage",
    operation: "cleanup",
    status: 202,
    body: cleanupBody,
    handler: ({ body, user, audit }) => {
      const runner = deps.services.jobs;
      if (!runner) throw new ApiError(503, "service_unavailable", "the job runner is not running");
      let job: ReturnType<typeof runner.submit>;
      try {
        job = runner.submit(
          STORAGE_CLEANUP_JOB,
          { dry_run: body.dry_run },
          { createdBy: user!.id, steps: ["scan", "remove"] },
        );
      } catch (err) {
        throw new ApiError(503, "service_unavailable", (err as Error).message);
      }
      audit({ resource_id: job.id, detail: { dry_run: body.dry_run } });
      return {
        message: body.dry_run ? "cleanup dry run started" : "cleanup started",
        job_id: job.id,
        dry_run: body.dry_run,
        status: job.status,
        job_url: `/api/jobs/${job.id}`,
      };
    },
  }),
];
