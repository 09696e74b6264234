import * as z from "zod";
import type { ImageBuildService } from "../../images/build.js";
import { RECIPE_NAME } from "../../images/recipes/manifest.js";
import { IMAGE_TYPES } from "../../images/service.js";
import { ApiError } from "../errors.js";
import { ADMIN_ONLY, type ApiDeps, defineRoute, READERS, type RouteModule } from "../route.js";
import { zName, zText } from "../validate.js";
import { imageApiError, imageView } from "./images.js";
import { jobView } from "./jobs.js";

declare module "../route.js" {
  interface ApiServices {
    /** Golden images built from the recipes installed on the server. */
    builds?: Pick<ImageBuildService, "recipes" | "build">;
  }
}

/**
 * A recipe by name only: the API never takes a recipe's content or a path. A name that
 * could leave recipes_dir ("/", "..") is refused here (422); a well-formed name that is
 * not installed is the service's 404.
 */
const buildBody = z
  .object({
    recipe: z
      .string()
      .regex(
        RECIPE_NAME,
        'a recipe name: a-z 0-9 . -, at most 63, no ".." (GET /api/images/recipes lists them)',
      ),
    name: zName(200),
    description: zText(2000).optional(),
    image_type: z.enum(IMAGE_TYPES).optional(),
  })
  .strict();

function service(deps: ApiDeps) {
  const s = deps.services.builds;
  if (!s) throw new ApiError(503, "service_unavailable", "image builds are not available");
  return s;
}

/**
 * /api/images/recipes and /api/images/build. Listed before the images module, so that
 * /images/recipes is not taken for /images/:id.
 */
export const imageBuildsRoutes: RouteModule = (deps) => [
  defineRoute({
    method: "GET",
    path: "/images/recipes",
    tag: "images",
    summary: "The image recipes installed on the server: name, description, steps, cached",
    roles: READERS,
    handler: () => ({ recipes: service(deps).recipes() }),
  }),
  defineRoute({
    method: "POST",
    path: "/images/build",
    tag: "images",
    summary:
      "Build an image from an installed recipe: a job whose steps are the recipe's (progress, logs, cancel through /api/jobs); the image ends ready like an upload",
    roles: ADMIN_ONLY,
    resource: "image",
    operation: "build",
    status: 202,
    body: buildBody,
    handler: ({ c, body, user, audit }) => {
      try {
        const { image, job } = service(deps).build({
          recipe: body.recipe,
          name: body.name,
          ...(body.description !== undefined ? { description: body.description } : {}),
          ...(body.image_type !== undefined ? { image_type: body.image_type } : {}),
          userId: user!.id,
        });
        audit({ resource_id: image.id, detail: { recipe: body.recipe, job_id: job.id } });
        c.header("Location", `/api/jobs/${job.id}`);
        const row = deps.store.images.getRow(image.id)!;
        const jobRow = deps.store.jobs.getRow(job.id)!;
        return { image_id: image.id, job_id: job.id, image: imageView(row), job: jobView(jobRow) };
      } catch (err) {
        throw imageApiError(err);
      }
    },
  }),
];
