import * as z from "zod";
import { STORAGE_CLEANUP_JOB } from "../../diskspace/cleanup.js";
import { storageHealth, storageInfo } from "../../diskspace/usage.js";
import type { Quarantine } from "../../iscsi/reconciler.js";
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
    /** Overlays and targets set aside because the database did not know them (iSCSI). */
    quarantine?: {
      list(): Promise<Quarantine>;
      /** An admin's explicit deletion; false when nothing has that name. */
      delete(name: string): Promise<boolean>;
    };
  }
}

/** What is quarantined; empty (and said so) when iSCSI is not running. */
async function quarantineOf(deps: ApiDeps): Promise<Quarantine & { available: boolean }> {
  const q = deps.services.quarantine;
  if (!q) return { available: false, overlays: [], unknown_targets: [] };
  return { available: true, ...(await q.list()) };
}

const quarantineParams = z.object({
  name: z
    .string()
    .min(1)
    .max(300)
    .regex(
      /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/,
      "a quarantined overlay's name or an unknown target's IQN",
    ),
});

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
    handler: async () => {
      const s = deps.services.storage;
      const dirs = [...new Set(s?.healthDirs ?? Object.values(deps.directories))];
      const health = await storageHealth(dirs, {
        clock: deps.clock,
        ...(s?.warnPercent !== undefined ? { warnPercent: s.warnPercent } : {}),
        ...(s?.criticalPercent !== undefined ? { criticalPercent: s.criticalPercent } : {}),
      });
      // Quarantined disks are somebody's data waiting for an admin's decision: a warning.
      const q = await quarantineOf(deps);
      const quarantine = {
        overlays: q.overlays.length,
        overlay_bytes: q.overlays.reduce((n, o) => n + o.sizeBytes, 0),
        unknown_targets: q.unknown_targets.length,
      };
      const waiting = quarantine.overlays + quarantine.unknown_targets > 0;
      return {
        ...health,
        status: waiting && health.status === "healthy" ? "warning" : health.status,
        quarantine,
      };
    },
  }),
  defineRoute({
    method: "GET",
    path: "/storage/quarantine",
    tag: "storage",
    summary:
      "Overlays set aside because no target in the database owned them, and unknown targets left running",
    roles: READERS,
    handler: () => quarantineOf(deps),
  }),
  defineRoute({
    method: "DELETE",
    path: "/storage/quarantine/:name",
    tag: "storage",
    summary: "Delete one quarantined overlay (for good) or remove one unknown target",
    roles: ADMIN_ONLY,
    resource: "storage",
    operation: "quarantine_delete",
    params: quarantineParams,
    handler: async ({ params, audit }) => {
      const q = deps.services.quarantine;
      if (!q) throw new ApiError(503, "service_unavailable", "iSCSI is not running");
      if (!(await q.delete(params.name))) {
        throw new ApiError(404, "not_found", `nothing quarantined is named ${params.name}`);
      }
      audit({ resource_id: params.name });
      return { message: "deleted", name: params.name };
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
