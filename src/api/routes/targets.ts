import { randomUUID } from "node:crypto";
import * as z from "zod";
import { additionalTargetNames, machineIdentity } from "../../iscsi/identity.js";
import { TARGET_SORTS, type TargetRow } from "../../store/targets.js";
import { conflictOnUnique, notFound, uniqueColumn } from "../conflict.js";
import { ApiError } from "../errors.js";
import {
  defineRoute,
  idParams,
  listQuery,
  OPERATORS,
  READERS,
  type RouteModule,
  sendList,
} from "../route.js";
import { zLabel, zName, zText } from "../validate.js";

/** What the API shows of a target: the CHAP credentials are never listed. */
export function targetView(t: TargetRow) {
  return {
    id: t.id,
    name: t.name,
    description: t.description,
    iqn: t.iqn,
    portal_ip: t.portal_ip,
    portal_port: t.portal_port,
    target_type: t.target_type,
    status: t.status,
    status_reason: t.status_reason,
    machine_id: t.machine_id,
    machine_name: t.machine_name,
    system_image_id: t.system_image_id,
    system_image_name: t.system_image_name,
    extra_disk_image_id: t.extra_disk_image_id,
    extra_disk_image_name: t.extra_disk_image_name,
    extra_disk_mountpoint: t.extra_disk_mountpoint,
    initiator_iqn: t.initiator_iqn,
    is_active: t.is_active === 1,
    // Versions: the one it pins (null: follows the image's current one), the one its
    // overlay was cloned from, and how far that is behind.
    image_version: t.system_image_version,
    pinned_version: t.system_image_version,
    overlay_version: t.overlay_version,
    versions_behind: t.versions_behind,
    // The version of the extra disk image its LUN serves (games) or its overlay was made from (data).
    extra_disk_version: t.extra_overlay_version,
    overlay_allocated_bytes: t.overlay_allocated_bytes,
    overlay_unique_bytes: t.overlay_unique_bytes,
    overlay_usage_at: t.overlay_usage_at,
    created_at: t.created_at,
    updated_at: t.updated_at,
  };
}

const createBody = z
  .object({
    name: zName(128).optional(),
    description: zText(1000).optional(),
    machine_id: z.number().int().positive(),
    system_image_id: z.number().int().positive(),
    extra_disk_image_id: z.number().int().positive().nullable().optional(),
    extra_disk_mountpoint: zLabel(64)
      .regex(/^([A-Za-z]:|\/[A-Za-z0-9._/-]*)?$/, "a drive letter such as D: or an absolute path")
      .nullable()
      .optional(),
    target_type: z.enum(["system", "system_game", "system_data"]).default("system"),
  })
  .strict()
  .superRefine((b, ctx) => {
    const hasExtra = b.extra_disk_image_id != null;
    if (b.target_type === "system" && hasExtra) {
      ctx.addIssue({
        code: "custom",
        path: ["extra_disk_image_id"],
        message: "only system_game and system_data targets have an extra disk",
      });
    }
    if (b.target_type !== "system" && !hasExtra) {
      ctx.addIssue({
        code: "custom",
        path: ["extra_disk_image_id"],
        message: `a ${b.target_type} target needs an extra disk image`,
      });
    }
  });

/**
 * /api/targets: a machine's iSCSI targets. One boots as a plain sanboot; with several
 * (a Windows and a Linux image, work and games) the machine boots through a menu of them.
 * Changes go to the reconciler through onTargetChanged.
 */
export const targetsRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const getRow = (id: number) => store.targets.getRow(id);
  const invalid = (field: string, detail: string) =>
    new ApiError(422, "validation_error", `${field}: ${detail}`, { field });
  return [
    defineRoute({
      method: "GET",
      path: "/targets",
      tag: "targets",
      summary: "List iSCSI targets",
      roles: READERS,
      query: listQuery(
        { sort: TARGET_SORTS },
        {
          machine_id: z.coerce.number().int().positive().optional(),
          status: z.enum(["pending", "active", "inactive", "error"]).optional(),
        },
      ),
      handler: ({ c, query }) => {
        const { rows, total } = store.targets.listRows(query, {
          machine_id: query.machine_id,
          status: query.status,
        });
        return sendList(c, rows.map(targetView), total, query);
      },
    }),
    defineRoute({
      method: "GET",
      path: "/targets/:id",
      tag: "targets",
      summary: "Get a target",
      roles: READERS,
      params: idParams,
      handler: ({ params }) =>
        targetView(getRow(params.id) ?? raise(notFound("target", params.id))),
    }),
    defineRoute({
      method: "POST",
      path: "/targets",
      tag: "targets",
      summary:
        "Create an iSCSI target for a machine (IQN, initiator ACL and CHAP secret made by the server); a machine with several boots through a menu",
      roles: OPERATORS,
      resource: "target",
      status: 201,
      body: createBody,
      handler: ({ body, audit }) => {
        const machine = store.machines.get(body.machine_id);
        if (!machine) throw invalid("machine_id", "no such machine");
        if (!store.images.get(body.system_image_id))
          throw invalid("system_image_id", "no such image");
        if (body.extra_disk_image_id != null && !store.images.get(body.extra_disk_image_id)) {
          throw invalid("extra_disk_image_id", "no such image");
        }
        const created = conflictOnUnique(
          () =>
            store.transaction(() => {
              const identity = machineIdentity(deps.iscsi.iqnPrefix, machine);
              const first = store.targets.forMachine(machine.id).length === 0;
              // A later target is named after its id, known once inserted: placeholders
              // first, replaced in the same transaction.
              const pending = `pending-${randomUUID()}`;
              const created = store.targets.create({
                ...identity,
                ...(first ? {} : { iqn: `${identity.iqn}:${pending}`, chap_username: pending }),
                name: body.name ?? (first ? `${machine.name}-Target` : pending),
                description: body.description ?? "",
                portal_ip: deps.iscsi.portalIp,
                portal_port: deps.iscsi.portalPort,
                target_type: body.target_type,
                machine_id: machine.id,
                system_image_id: body.system_image_id,
                extra_disk_image_id: body.extra_disk_image_id ?? null,
                extra_disk_mountpoint: body.extra_disk_mountpoint ?? null,
              });
              if (first) return created;
              return store.targets.update(created.id, {
                ...additionalTargetNames(identity, created.id),
                ...(body.name ? {} : { name: `${machine.name}-Target-${created.id}` }),
              })!;
            }),
          (err) =>
            uniqueColumn(err) === "iqn"
              ? "another machine's name maps to the same IQN"
              : "a target with this name exists",
        );
        audit({ machine_id: machine.id });
        deps.onTargetChanged(machine.id);
        return targetView(getRow(created.id)!);
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/targets/:id",
      tag: "targets",
      summary: "Delete a target",
      roles: OPERATORS,
      resource: "target",
      params: idParams,
      handler: ({ params, audit }) => {
        const t = store.targets.get(params.id);
        if (!t || !store.targets.delete(t.id)) throw notFound("target", params.id);
        audit({ machine_id: t.machine_id });
        deps.onTargetChanged(t.machine_id);
        return { message: "target deleted", id: t.id };
      },
    }),
  ];
};

function raise(err: Error): never {
  throw err;
}
