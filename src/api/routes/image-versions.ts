import type { ContentfulStatusCode } from "hono/utils/http-status";
import * as z from "zod";
import { VersionError, type VersionErrorCode } from "../../images/version-errors.js";
import type { VersionService } from "../../images/versions.js";
import { versionsBehind } from "../../iscsi/version-selection.js";
import type { ImageUpdateRow, ImageVersionRow } from "../../store/image-versions.js";
import { notFound } from "../conflict.js";
import { ApiError, type ErrorCode } from "../errors.js";
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
import { imageView } from "./images.js";

declare module "../route.js" {
  interface ApiServices {
    /** Image versions and the update cycle (super-client, commit, rollback, resets). */
    versions?: VersionService;
  }
}

/** A version in the GGnet style: snake_case, ISO times, who made it and who uses it. */
export function versionView(v: ImageVersionRow, currentVersion: number | null) {
  return {
    version: v.version,
    image_id: v.image_id,
    created_at: v.created_at,
    comment: v.note,
    size_bytes: v.size_bytes,
    checksum_sha256: v.checksum_sha256,
    created_by: v.created_by,
    created_by_username: v.created_by_username,
    in_use_by: v.in_use_by,
    is_current: v.version === currentVersion,
  };
}

export function updateView(u: ImageUpdateRow) {
  return {
    id: u.id,
    image_id: u.image_id,
    machine_id: u.machine_id,
    machine_name: u.machine_name,
    base_version: u.base_version,
    status: u.status,
    comment: u.comment,
    draft_booted_at: u.draft_booted_at,
    committed_version: u.committed_version,
    created_by: u.created_by,
    created_at: u.created_at,
    updated_at: u.updated_at,
    closed_at: u.closed_at,
  };
}

/** How each refusal of the update cycle reaches a client. */
const VERSION_ERRORS: Record<VersionErrorCode, [ContentfulStatusCode, ErrorCode]> = {
  not_found: [404, "not_found"],
  invalid_reference: [422, "validation_error"],
  not_ready: [409, "conflict_error"],
  machine_not_on_image: [409, "conflict_error"],
  update_open: [409, "conflict_error"],
  update_closed: [409, "conflict_error"],
  not_booted: [409, "conflict_error"],
  live_session: [409, "conflict_error"],
  insufficient_space: [507, "insufficient_storage"],
  unavailable: [503, "service_unavailable"],
  reset_policy: [409, "conflict_error"],
  no_writeback: [409, "conflict_error"],
  snapshot_mismatch: [409, "conflict_error"],
};

export function versionApiError(err: unknown): unknown {
  if (!(err instanceof VersionError)) return err;
  const [status, code] = VERSION_ERRORS[err.code];
  return new ApiError(status, code, err.message, { reason: err.code, ...err.details });
}

/** Runs a call of the version or snapshot service, its refusals answered as API errors. */
export async function versionCall<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw versionApiError(err);
  }
}

const updateParams = z.object({
  id: z.coerce.number().int().positive(),
  update_id: z.coerce.number().int().positive(),
});

const openBody = z
  .object({ machine_id: z.number().int().positive(), comment: zText(2000).optional() })
  .strict();
const commitBody = z.object({ comment: zText(2000) }).strict();
const rollbackBody = z.object({ version: z.number().int().positive() }).strict();

/**
 * /api/images/{id}/versions, /updates, /rollback and /api/targets/{id}/reset: the weekly
 * loop of a diskless fleet (patch on one PC, check it, roll it out, roll it back).
 */
export const imageVersionsRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const image = (id: number) => {
    const row = store.images.getRow(id);
    if (!row) throw notFound("image", id);
    return row;
  };
  const run = <T>(fn: (s: VersionService) => T | Promise<T>): Promise<T> =>
    versionCall(() => fn(versionService(deps)));
  return [
    defineRoute({
      method: "GET",
      path: "/images/:id/versions",
      tag: "images",
      summary: "List an image's versions (comment, size, who made it, how many use it)",
      roles: READERS,
      params: idParams,
      handler: ({ params }) => {
        const img = image(params.id);
        return store.imageVersions.list(img.id).map((v) => versionView(v, img.current_version));
      },
    }),
    defineRoute({
      method: "GET",
      path: "/images/:id/updates",
      tag: "images",
      summary: "List an image's updates (open, committed, discarded), newest first",
      roles: READERS,
      params: idParams,
      handler: ({ params }) => store.imageUpdates.list(image(params.id).id).map(updateView),
    }),
    defineRoute({
      method: "POST",
      path: "/images/:id/updates",
      tag: "images",
      summary:
        "Open an update: the machine (super-client) boots a writable draft of the current version at its next boot",
      roles: ADMIN_ONLY,
      resource: "image_update",
      operation: "open",
      status: 201,
      params: idParams,
      body: openBody,
      handler: async ({ params, body, user, audit }) => {
        image(params.id);
        const u = await run((s) => s.openUpdate(params.id, body, user?.id ?? null));
        audit({
          resource_id: u.id,
          machine_id: u.machine_id,
          detail: { image_id: u.image_id, base_version: u.base_version },
        });
        return updateView(u);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/images/:id/updates/:update_id/commit",
      tag: "images",
      summary:
        "Commit an update: its draft becomes the next version (a clone, not a copy) and the current one",
      roles: ADMIN_ONLY,
      resource: "image_update",
      operation: "commit",
      params: updateParams,
      body: commitBody,
      handler: async ({ params, body, user, audit }) => {
        const img = image(params.id);
        const v = await run((s) =>
          s.commit(img.id, params.update_id, body.comment, user?.id ?? null),
        );
        audit({
          resource_id: params.update_id,
          detail: { image_id: img.id, version: v.version },
        });
        return versionView(v, store.images.get(img.id)?.current_version ?? null);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/images/:id/updates/:update_id/discard",
      tag: "images",
      summary: "Discard an update and its draft",
      roles: ADMIN_ONLY,
      resource: "image_update",
      operation: "discard",
      params: updateParams,
      handler: async ({ params, audit }) => {
        const img = image(params.id);
        const u = await run((s) => s.discard(img.id, params.update_id));
        audit({ resource_id: u.id, machine_id: u.machine_id, detail: { image_id: img.id } });
        return updateView(u);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/images/:id/rollback",
      tag: "images",
      summary: "Make an earlier version current: the next boots use it",
      roles: ADMIN_ONLY,
      resource: "image",
      operation: "rollback",
      params: idParams,
      body: rollbackBody,
      handler: async ({ params, body, audit }) => {
        const img = image(params.id);
        const from = img.current_version;
        await run((s) => s.rollback(img.id, body.version));
        audit({ resource_id: img.id, detail: { from, to: body.version } });
        return imageView(image(img.id));
      },
    }),
    defineRoute({
      method: "POST",
      path: "/targets/:id/reset",
      tag: "targets",
      summary:
        "Give a machine a fresh overlay of the current (or pinned) version (409 while it has a live session)",
      roles: OPERATORS,
      resource: "target",
      operation: "reset",
      params: idParams,
      handler: async ({ params, audit }) => {
        const t = store.targets.get(params.id);
        if (!t) throw notFound("target", params.id);
        const after = await run((s) => s.resetTarget(t.id));
        audit({
          resource_id: t.id,
          machine_id: t.machine_id,
          detail: { overlay_version: after.overlay_version },
        });
        return {
          id: after.id,
          machine_id: after.machine_id,
          system_image_id: after.system_image_id,
          overlay_version: after.overlay_version,
          overlay_reset_at: after.overlay_reset_at,
          versions_behind: versionsBehind(store, after),
          status: after.status,
          status_reason: after.status_reason,
        };
      },
    }),
  ];
};

/** The image version service, or 503 when the daemon runs without it. */
export function versionService(deps: ApiDeps): VersionService {
  const s = deps.services.versions;
  if (!s)
    throw new ApiError(503, "service_unavailable", "the image version service is not running");
  return s;
}
