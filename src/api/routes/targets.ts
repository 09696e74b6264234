import { randomBytes } from "node:crypto";
import { z } from "zod";
import type { Target } from "../../store/targets.js";
import { conflictOnUnique, notFound, uniqueColumn } from "../conflict.js";
import { ApiError } from "../errors.js";
import {
  defineRoute,
  idParams,
  listQuery,
  OPERATORS,
  READERS,
  type RouteModule,
  runList,
  sendList,
} from "../route.js";
import { zLabel, zName, zText } from "../validate.js";

type TargetRow = Target & {
  machine_name: string;
  system_image_name: string | null;
  extra_disk_image_name: string | null;
};

/** The machine-name part of an IQN: lowercase letters, digits, dots and hyphens. */
export function iqnSlug(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, "-")
    .replace(/^[-.]+|[-.]+$/g, "");
  return s || "machine";
}

/** The initiator name a machine's iPXE presents: bound to its MAC, so it is stable. */
export function initiatorIqn(prefix: string, mac: string): string {
  return `${prefix}:client-${mac.replace(/:/g, "")}`;
}

/**
 * A CHAP secret: 16 letters and digits. Microsoft's initiator takes 12 to 16 characters,
 * and these never need escaping in an iPXE script.
 */
export function chapSecret(): string {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
  const out: string[] = [];
  while (out.length < 16) {
    for (const b of randomBytes(32)) {
      // Rejection sampling keeps every character equally likely.
      if (b < 256 - (256 % alphabet.length) && out.length < 16)
        out.push(alphabet[b % alphabet.length]!);
    }
  }
  return out.join("");
}

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
    created_at: t.created_at,
    updated_at: t.updated_at,
  };
}

export const TARGET_SELECT = `t.*, m.name AS machine_name, si.name AS system_image_name, xi.name AS extra_disk_image_name`;
export const TARGET_FROM = `targets t JOIN machines m ON m.id = t.machine_id
  LEFT JOIN images si ON si.id = t.system_image_id LEFT JOIN images xi ON xi.id = t.extra_disk_image_id`;

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

/** /api/targets: one iSCSI target per machine; changes go to the reconciler through onTargetChanged. */
export const targetsRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const getRow = (id: number) =>
    store.db.prepare(`SELECT ${TARGET_SELECT} FROM ${TARGET_FROM} WHERE t.id = ?`).get(id) as
      | TargetRow
      | undefined;
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
        { sort: ["id", "name", "status", "machine_id", "created_at"] },
        {
          machine_id: z.coerce.number().int().positive().optional(),
          status: z.enum(["pending", "active", "inactive", "error"]).optional(),
        },
      ),
      handler: ({ c, query }) => {
        const { rows, total } = runList<TargetRow>(
          store.db,
          {
            select: TARGET_SELECT,
            from: TARGET_FROM,
            where: [
              query.machine_id !== undefined && "t.machine_id = @machine",
              query.status && "t.status = @status",
            ],
            params: { machine: query.machine_id, status: query.status },
            search: ["t.name", "t.description", "t.iqn", "m.name"],
            sort: {
              id: "t.id",
              name: "t.name",
              status: "t.status",
              machine_id: "t.machine_id",
              created_at: "t.created_at",
            },
            tiebreak: "t.id",
          },
          query,
        );
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
        "Create a machine's iSCSI target (IQN, initiator ACL and CHAP secret made by the server)",
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
        const prefix = deps.iscsi.iqnPrefix;
        const created = conflictOnUnique(
          () =>
            store.transaction(() => {
              if (store.targets.forMachine(machine.id).length > 0) {
                throw new ApiError(
                  409,
                  "conflict_error",
                  `machine ${machine.name} already has a target`,
                );
              }
              return store.targets.create({
                name: body.name ?? `${machine.name}-Target`,
                description: body.description ?? "",
                iqn: `${prefix}:${iqnSlug(machine.name)}`,
                portal_ip: deps.iscsi.portalIp,
                portal_port: deps.iscsi.portalPort,
                target_type: body.target_type,
                machine_id: machine.id,
                system_image_id: body.system_image_id,
                extra_disk_image_id: body.extra_disk_image_id ?? null,
                extra_disk_mountpoint: body.extra_disk_mountpoint ?? null,
                initiator_iqn: initiatorIqn(prefix, machine.mac_address),
                chap_username: `bf-${iqnSlug(machine.name)}`.slice(0, 64),
                chap_password: chapSecret(),
              });
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
