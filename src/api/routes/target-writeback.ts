import * as z from "zod";
import type { SnapshotService } from "../../images/snapshots.js";
import type { VersionService } from "../../images/versions.js";
import { versionsBehind } from "../../iscsi/version-selection.js";
import type { TargetSnapshotRow } from "../../store/target-snapshots.js";
import type { Target } from "../../store/targets.js";
import { notFound } from "../conflict.js";
import { ApiError } from "../errors.js";
import {
  ADMIN_ONLY,
  type ApiDeps,
  defineRoute,
  idParams,
  OPERATORS,
  READERS,
  type RouteModule,
} from "../route.js";
import { zText } from "../validate.js";
import { versionCall, versionService, versionView } from "./image-versions.js";

declare module "../route.js" {
  interface ApiServices {
    /** Writeback snapshots of persistent machines (take, restore, delete). */
    snapshots?: SnapshotService;
  }
}

export function snapshotView(s: TargetSnapshotRow) {
  return {
    id: s.id,
    target_id: s.target_id,
    image_id: s.image_id,
    image_version: s.image_version,
    comment: s.comment,
    size_bytes: s.size_bytes,
    created_by: s.created_by,
    created_by_username: s.created_by_username,
    created_at: s.created_at,
  };
}

/** A target's disk after a change: which version it rests on, pins, and how far behind. */
function diskView(store: ApiDeps["store"], t: Target) {
  return {
    id: t.id,
    machine_id: t.machine_id,
    system_image_id: t.system_image_id,
    pinned_version: t.system_image_version,
    overlay_version: t.overlay_version,
    versions_behind: versionsBehind(store, t),
    status: t.status,
    status_reason: t.status_reason,
  };
}

const snapshotParams = z.object({
  id: z.coerce.number().int().positive(),
  sid: z.coerce.number().int().positive(),
});
const takeBody = z.object({ comment: zText(2000).default("") }).strict();
const promoteBody = z
  .object({
    comment: zText(2000),
    /** false: the new version is kept but not booted until a rollback makes it current. */
    make_current: z.boolean().default(true),
  })
  .strict();
const pinBody = z.object({ pinned_version: z.number().int().positive().nullable() }).strict();

/**
 * /api/targets/{id}/snapshots, /promote and /pin: a persistent machine's writeback kept
 * as restore points, promoted into its image, and which version the target follows.
 */
export const targetWritebackRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const target = (id: number) => store.targets.get(id) ?? raise(notFound("target", id));
  const snapshots = (): SnapshotService =>
    deps.services.snapshots ??
    raise(new ApiError(503, "service_unavailable", "the snapshot service is not running"));
  const versions = (): VersionService => versionService(deps);
  return [
    defineRoute({
      method: "GET",
      path: "/targets/:id/snapshots",
      tag: "targets",
      summary: "List a target's writeback snapshots, oldest first",
      roles: READERS,
      params: idParams,
      handler: ({ params }) => {
        target(params.id);
        return store.targetSnapshots.list(params.id).map(snapshotView);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/targets/:id/snapshots",
      tag: "targets",
      summary:
        "Take a snapshot of a persistent machine's writeback (a clone, constant time; taken while it runs it is crash-consistent)",
      roles: OPERATORS,
      resource: "target_snapshot",
      operation: "create",
      status: 201,
      params: idParams,
      body: takeBody,
      handler: async ({ params, body, user, audit }) => {
        const t = target(params.id);
        const snap = await versionCall(() =>
          snapshots().take(t.id, body.comment, user?.id ?? null),
        );
        audit({ resource_id: snap.id, machine_id: t.machine_id, detail: { target_id: t.id } });
        return snapshotView(snap);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/targets/:id/snapshots/:sid/restore",
      tag: "targets",
      summary:
        "Restore a snapshot: the machine's disk goes back to it (409 while the machine has a live session)",
      roles: OPERATORS,
      resource: "target_snapshot",
      operation: "restore",
      params: snapshotParams,
      handler: async ({ params, audit }) => {
        const t = target(params.id);
        const after = await versionCall(() => snapshots().restore(t.id, params.sid));
        audit({
          resource_id: params.sid,
          machine_id: t.machine_id,
          detail: { target_id: t.id, overlay_version: after.overlay_version },
        });
        return diskView(store, after);
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/targets/:id/snapshots/:sid",
      tag: "targets",
      summary: "Delete a snapshot and its file",
      roles: OPERATORS,
      resource: "target_snapshot",
      operation: "delete",
      params: snapshotParams,
      handler: async ({ params, audit }) => {
        const t = target(params.id);
        const gone = await versionCall(() => snapshots().delete(t.id, params.sid));
        audit({ resource_id: gone.id, machine_id: t.machine_id, detail: { target_id: t.id } });
        return { message: "snapshot deleted", id: gone.id };
      },
    }),
    defineRoute({
      method: "POST",
      path: "/targets/:id/promote",
      tag: "targets",
      summary:
        "Promote a persistent machine's writeback into the next version of its image (a clone; 409 while it runs)",
      roles: ADMIN_ONLY,
      resource: "target",
      operation: "promote",
      params: idParams,
      body: promoteBody,
      handler: async ({ params, body, user, audit }) => {
        const t = target(params.id);
        const v = await versionCall(() => versions().promote(t.id, body, user?.id ?? null));
        audit({
          resource_id: t.id,
          machine_id: t.machine_id,
          detail: { image_id: t.system_image_id, version: v.version, current: body.make_current },
        });
        return versionView(v, store.images.get(t.system_image_id)?.current_version ?? null);
      },
    }),
    defineRoute({
      method: "PUT",
      path: "/targets/:id/pin",
      tag: "targets",
      summary:
        "Pin a target to a version of its image, or follow the current one (null); its next fresh overlay is of that version",
      roles: OPERATORS,
      resource: "target",
      operation: "pin",
      params: idParams,
      body: pinBody,
      handler: async ({ params, body, audit }) => {
        const t = target(params.id);
        const after = await versionCall(() => versions().pin(t.id, body.pinned_version));
        audit({
          resource_id: t.id,
          machine_id: t.machine_id,
          detail: { from: t.system_image_version, to: body.pinned_version },
        });
        return diskView(store, after);
      },
    }),
  ];
};

function raise(err: Error): never {
  throw err;
}
