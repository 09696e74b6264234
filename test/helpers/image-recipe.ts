import { join, resolve } from "node:path";
import {
  BUILD_TIMEOUT_MS,
  type BuildOptions,
  type BuiltImage,
  buildRecipe,
} from "../../src/images/recipes/builder.js";
import { loadRecipe } from "../../src/images/recipes/manifest.js";

/**
 * The tests' way to a recipe's image: the product's runner (src/images/recipes/) with the
 * tests' own cache, ${BOOTFLEET_IMAGE_CACHE:-/var/cache/bootfleet-test}/images, which
 * outlives a test run so the e2e tests build the Debian image once.
 */

export { BUILD_TIMEOUT_MS };
export const IMAGES_DIR = resolve(import.meta.dirname, "../../images");

export function cacheRoot(): string {
  return join(process.env.BOOTFLEET_IMAGE_CACHE || "/var/cache/bootfleet-test", "images");
}

/** The cached image of the recipe in images/<name>, built first if missing. */
export function buildImage(
  name: string,
  opts: Omit<BuildOptions, "cacheDir"> & { recipesDir?: string } = {},
): Promise<BuiltImage> {
  const { recipesDir, ...rest } = opts;
  return buildRecipe(loadRecipe(join(recipesDir ?? IMAGES_DIR, name)), {
    cacheDir: cacheRoot(),
    keepWork: process.env.BOOTFLEET_IMAGE_KEEP_WORK === "1",
    ...rest,
  });
}

// `npx tsx test/helpers/image-recipe.ts debian-12` builds (or finds) an image outside a
// test, e.g. before the e2e tests in CI or to read a build log; prints the image's path.
if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) {
  const name = process.argv[2] ?? "debian-12";
  const img = await buildImage(name, {
    log: (m) => console.error(m),
    onProgress: (p) =>
      console.error(`  [${p.index + 1}/${p.count} ${p.step.id} ${p.percent}%] ${p.message}`),
  });
  console.error(`${img.built ? "built" : "cached"} in ${img.seconds.toFixed(1)} s`);
  console.log(img.path);
}
