import * as z from "zod";
import { BULK_ACTIONS, BULK_JOB, type BulkParams } from "../../fleet/bulk.js";
import { ApiError } from "../errors.js";
import { defineRoute, OPERATORS, type RouteModule } from "../route.js";

const BOOT_ACTIONS = ["sanboot", "menu", "local", "kernel", "custom", "disabled"] as const;

const bulkBody = z
  .object({
    action: z.enum(BULK_ACTIONS),
    machine_ids: z.array(z.number().int().positive()).min(1).max(1000).optional(),
    location_id: z.number().int().positive().optional(),
    image_id: z.number().int().positive().optional(),
    boot_action: z.enum(BOOT_ACTIONS).optional(),
  })
  .strict()
  .superRefine((b, ctx) => {
    if ((b.machine_ids === undefined) === (b.location_id === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["machine_ids"],
        message: "give either machine_ids or location_id",
      });
    }
    if (b.action === "assign_image" && b.image_id === undefined) {
      ctx.addIssue({ code: "custom", path: ["image_id"], message: "assign_image needs image_id" });
    }
    if (b.action === "set_boot_action" && b.boot_action === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["boot_action"],
        message: "set_boot_action needs boot_action",
      });
    }
  });

/**
 * POST /api/machines/bulk: one action on a selection (machine ids, or every machine of a
 * location) as ONE job; GET /api/jobs/{id} shows each machine's outcome in the job's
 * result and log lines. Answers 202 with the job.
 */
export const machinesBulkRoutes: RouteModule = (deps) => [
  defineRoute({
    method: "POST",
    path: "/machines/bulk",
    tag: "machines",
    summary:
      "Power on/off/cycle, reset overlays, assign an image or set the boot action of many machines: one job",
    roles: OPERATORS,
    resource: "machine",
    operation: "bulk",
    status: 202,
    body: bulkBody,
    handler: ({ body, user, audit }) => {
      const { store } = deps;
      const runner = deps.services.jobs;
      if (!runner)
        throw new ApiError(503, "service_unavailable", "the job runner is not available");
      let ids: number[];
      if (body.location_id !== undefined) {
        if (!store.locations.get(body.location_id)) {
          throw new ApiError(422, "validation_error", "location_id: no such location", {
            field: "location_id",
          });
        }
        ids = store.locations.machineIds(body.location_id);
        if (!ids.length) {
          throw new ApiError(409, "conflict_error", "the location has no machines");
        }
      } else {
        ids = [...new Set(body.machine_ids!)];
        const missing = ids.filter((id) => !store.machines.get(id));
        if (missing.length) {
          throw new ApiError(
            422,
            "validation_error",
            `machine_ids: no such machine: ${missing.join(", ")}`,
            {
              field: "machine_ids",
            },
          );
        }
      }
      if (body.image_id !== undefined && !store.images.get(body.image_id)) {
        throw new ApiError(422, "validation_error", "image_id: no such image", {
          field: "image_id",
        });
      }
      const params: BulkParams = {
        action: body.action,
        machine_ids: ids,
        ...(body.image_id !== undefined ? { image_id: body.image_id } : {}),
        ...(body.boot_action !== undefined ? { boot_action: body.boot_action } : {}),
      };
      const job = runner.submit(BULK_JOB, params, { createdBy: user!.id });
      audit({ resource_id: job.id, detail: { action: body.action, machines: ids.length } });
      return {
        job_id: job.id,
        action: body.action,
        machine_ids: ids,
        status: job.status,
        message: `${body.action} on ${ids.length} machine(s): follow GET /api/jobs/${job.id}`,
      };
    },
  }),
];
