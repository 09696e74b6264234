import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import type { Recipe } from "./manifest.js";

/**
 * Bump when the runner changes what a recipe produces in a way its files do not show.
 * (Still 1 since the runner moved from test/helpers/ into the product: same output, so
 * images built before the move stay valid.)
 */
export const RUNNER_VERSION = 1;

/**
 * The build cache's key: sha256 over every file of the recipe folder (path, executable
 * bit, content), the apt sources it installs from and RUNNER_VERSION. A changed script or
 * package list builds a new image; an unchanged recipe is found in the cache.
 */
export function recipeHash(recipe: Recipe, sources: readonly string[]): string {
  const h = createHash("sha256");
  h.update(`runner ${RUNNER_VERSION}\n${sources.join("\n")}\n`);
  const walk = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true })
      .flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]))
      .sort();
  for (const f of walk(recipe.dir)) {
    const mode = statSync(f).mode & 0o111 ? "x" : "-";
    const data = readFileSync(f);
    h.update(`${relative(recipe.dir, f)} ${mode} ${data.length}\n`);
    h.update(data);
  }
  return h.digest("hex").slice(0, 16);
}
