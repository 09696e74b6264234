import type { ContentfulStatusCode } from "hono/utils/http-status";
import * as z from "zod";
import { ImageError, type ImageErrorCode } from "../../images/errors.js";
import { IMAGE_TYPES, type ImageService } from "../../images/service.js";
import { IMAGE_SORTS, type ImageRow } from "../../store/images.js";
import { conflictOnUnique, notFound } from "../conflict.js";
import { ApiError, type ErrorCode } from "../errors.js";
import {
  ADMIN_ONLY,
  type ApiDeps,
  defineRoute,
  idParams,
  listQuery,
  READERS,
  type RouteModule,
  sendList,
} from "../route.js";
import { zName, zText } from "../validate.js";

declare module "../route.js" {
  interface ApiServices {
    /** Uploads, import jobs and deletion of golden images. */
    images?: ImageService;
  }
}

const IMAGE_STATUSES = ["uploading", "processing", "ready", "error"] as const;

/** An image in the GGnet shape (plus status_reason and the current version). */
export function imageView(i: ImageRow) {
  return {
    id: i.id,
    name: i.name,
    description: i.description,
    filename: i.filename,
    format: i.format,
    size_bytes: i.size_bytes,
    virtual_size_bytes: i.virtual_size_bytes,
    status: i.status,
    status_reason: i.status_reason,
    image_type: i.image_type,
    checksum_md5: i.checksum_md5,
    checksum_sha256: i.checksum_sha256,
    current_version: i.current_version,
    created_at: i.created_at,
    updated_at: i.updated_at,
    created_by: i.created_by,
    created_by_username: i.created_by_username,
  };
}

const updateBody = z
  .object({
    name: zName(200),
    description: zText(2000),
    image_type: z.enum(IMAGE_TYPES),
  })
  .partial()
  .strict();

/** How each refusal of the image library reaches a client (cf. PowerError in power.ts). */
const IMAGE_ERRORS: Record<ImageErrorCode, [ContentfulStatusCode, ErrorCode]> = {
  invalid_upload: [422, "validation_error"],
  name_taken: [409, "conflict_error"],
  not_found: [404, "not_found"],
  in_use: [409, "conflict_error"],
  too_large: [413, "payload_too_large"],
  storage_full: [507, "insufficient_storage"],
  // Nobody is left to read the answer; the status is for the log and history.
  upload_aborted: [400, "validation_error"],
};

/** An ImageError as the contract's error; anything else unchanged. */
export function imageApiError(err: unknown): unknown {
  if (!(err instanceof ImageError)) return err;
  const [status, code] = IMAGE_ERRORS[err.code];
  const extra = err.code === "upload_aborted" ? { field: "file" } : err.details;
  return new ApiError(status, code, err.message, extra);
}

function service(deps: ApiDeps): ImageService {
  const s = deps.services.images;
  if (!s) throw new ApiError(503, "service_unavailable", "the image service is not running");
  return s;
}

/** /api/images: the golden image library (admins write; operators and viewers read). */
export const imagesRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const view = (id: number) => {
    const row = store.images.getRow(id);
    if (!row) throw notFound("image", id);
    return imageView(row);
  };
  return [
    defineRoute({
      method: "GET",
      path: "/images",
      tag: "images",
      summary: "List disk images",
      roles: READERS,
      query: listQuery(
        { sort: IMAGE_SORTS },
        {
          image_type: z.enum(IMAGE_TYPES).optional(),
          status: z.enum(IMAGE_STATUSES).optional(),
        },
      ),
      handler: ({ c, query }) => {
        const { rows, total } = store.images.listRows(query, {
          image_type: query.image_type,
          status: query.status,
        });
        return sendList(c, rows.map(imageView), total, query);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/images/upload",
      tag: "images",
      summary:
        "Upload a disk image (multipart: file, name, description, image_type); it is imported by a job",
      roles: ADMIN_ONLY,
      resource: "image",
      operation: "upload",
      status: 201,
      rateLimit: "upload",
      handler: async ({ c, user, audit }) => {
        const images = service(deps);
        const body = c.req.raw.body;
        if (!body) {
          throw new ApiError(422, "validation_error", "file: required", { field: "file" });
        }
        const headers: Record<string, string> = {};
        c.req.raw.headers.forEach((v, k) => {
          headers[k] = v;
        });
        try {
          const { image, job } = await images.upload({ headers, body, userId: user!.id });
          audit({ resource_id: image.id, detail: { job_id: job.id, bytes: image.size_bytes } });
          c.header("Location", `/api/images/${image.id}`);
          return { ...view(image.id), job_id: job.id };
        } catch (err) {
          // The upload code stops reading the body when it fails; the rest of a large
          // upload must not be read into the next request on this connection.
          c.header("Connection", "close");
          if (err instanceof ImageError && err.code === "upload_aborted") {
            deps.log.info({ reason: err.message }, "image upload cut off by the client");
          }
          throw imageApiError(err);
        }
      },
    }),
    defineRoute({
      method: "GET",
      path: "/images/:id",
      tag: "images",
      summary: "Get an image",
      roles: READERS,
      params: idParams,
      handler: ({ params }) => view(params.id),
    }),
    defineRoute({
      method: "PUT",
      path: "/images/:id",
      tag: "images",
      summary: "Update an image's name, description or type",
      roles: ADMIN_ONLY,
      resource: "image",
      params: idParams,
      body: updateBody,
      handler: ({ params, body }) => {
        if (!store.images.get(params.id)) throw notFound("image", params.id);
        const images = deps.services.images;
        try {
          conflictOnUnique(
            () => (images ? images.update(params.id, body) : store.images.update(params.id, body)),
            () => "an image with this name exists",
          );
        } catch (err) {
          throw imageApiError(err);
        }
        return view(params.id);
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/images/:id",
      tag: "images",
      summary: "Delete an image and its files (409 while a target uses it or a job imports it)",
      roles: ADMIN_ONLY,
      resource: "image",
      params: idParams,
      handler: async ({ params }) => {
        if (!store.images.get(params.id)) throw notFound("image", params.id);
        await service(deps)
          .delete(params.id)
          .catch((err: unknown) => {
            throw imageApiError(err);
          });
        return { message: "image deleted", id: params.id };
      },
    }),
  ];
};
