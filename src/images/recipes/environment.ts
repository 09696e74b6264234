import { join } from "node:path";
import { hostSources } from "../../host/apt-sources.js";
import { partitionSectors, type Recipe } from "./manifest.js";

/**
 * The apt sources a recipe installs from: the build host's own Debian mirror for the
 * recipe's suite (often the only one it can reach); none for a recipe without a base.
 */
export function recipeSources(recipe: Recipe, aptDir?: string): string[] {
  return recipe.base ? hostSources(recipe.base.suite, aptDir) : [];
}

/**
 * Everything a step script gets, as environment variables (the table of images/README.md):
 * the recipe's fields, the layout in sectors, the work dir (shared by all steps of one
 * build) and the apt sources. Nothing else of the daemon's environment reaches a step.
 */
export function stepEnvironment(
  recipe: Recipe,
  workDir: string,
  sources: readonly string[],
): Record<string, string> {
  const env: Record<string, string> = {
    BF_RECIPE_DIR: recipe.dir,
    BF_RECIPE_NAME: recipe.name,
    BF_WORK_DIR: workDir,
    BF_OUTPUT: join(workDir, recipe.output.file),
    BF_PACKAGES: recipe.packages.join(" "),
    BF_DPKG_EXCLUDES: recipe.dpkgExcludes.join(" "),
    BF_APT_SOURCES: sources.join("\n"),
    BF_DISK_SIZE_MIB: String(recipe.layout.sizeMiB),
  };
  if (recipe.base) {
    env.BF_SUITE = recipe.base.suite;
    env.BF_VARIANT = recipe.base.variant;
  }
  if (recipe.hostname) env.BF_HOSTNAME = recipe.hostname;
  const parts = partitionSectors(recipe);
  env.BF_PARTITIONS = parts.map((p) => p.id).join(" ");
  for (const p of parts) {
    const k = `BF_PART_${p.id.toUpperCase()}`;
    env[`${k}_NAME`] = p.name;
    env[`${k}_TYPE`] = p.typeGuid;
    env[`${k}_START`] = String(p.start);
    env[`${k}_SECTORS`] = String(p.sectors);
    if (p.fs) env[`${k}_FS`] = p.fs;
    if (p.label) env[`${k}_LABEL`] = p.label;
  }
  return env;
}
