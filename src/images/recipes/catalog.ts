import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { cacheEntry } from "./builder.js";
import { loadRecipe, RECIPE_NAME, type Recipe, RecipeError } from "./manifest.js";

/** What a client sees of an installed recipe. */
export interface RecipeSummary {
  name: string;
  description: string;
  steps: { id: string; title: string }[];
  /** Its output for the recipe as it is now is in the build cache: a build is quick. */
  cached: boolean;
  /** The build cache key (recipe content hash); absent when it cannot be computed. */
  hash?: string;
  /** Why the cache state is unknown (no apt source for the recipe's suite...). */
  problem?: string;
}

export interface RecipeCatalogOptions {
  /** `[images] recipes_dir`: one folder per recipe. Only these can be built. */
  recipesDir: string;
  /** `[images] build_cache_dir`. */
  cacheDir: string;
  aptDir?: string;
}

/** A recipe name the catalog does not have (or a folder whose manifest is broken). */
export class RecipeNotFound extends Error {
  override name = "RecipeNotFound";
}

/**
 * The recipes installed on this server: the folders of recipes_dir with a recipe.json.
 * A request names a recipe; the catalog gives it only one of these folders, never a path
 * built from the request beyond a name that cannot leave the folder.
 */
export class RecipeCatalog {
  constructor(readonly opts: RecipeCatalogOptions) {}

  /** Installed recipes by name; a folder whose manifest does not load is left out. */
  list(): { recipes: RecipeSummary[]; broken: { name: string; reason: string }[] } {
    const recipes: RecipeSummary[] = [];
    const broken: { name: string; reason: string }[] = [];
    for (const name of this.#names()) {
      let recipe: Recipe;
      try {
        recipe = loadRecipe(join(this.opts.recipesDir, name));
      } catch (err) {
        broken.push({ name, reason: (err as Error).message });
        continue;
      }
      const summary: RecipeSummary = {
        name: recipe.name,
        description: recipe.description,
        steps: recipe.steps.map((s) => ({ id: s.id, title: s.title })),
        cached: false,
      };
      try {
        const entry = cacheEntry(recipe, this.opts.cacheDir, this.opts.aptDir);
        summary.cached = entry.cached;
        summary.hash = entry.hash;
      } catch (err) {
        summary.problem = (err as Error).message;
      }
      recipes.push(summary);
    }
    return { recipes, broken };
  }

  /** The recipe of that name; RecipeNotFound when it is not installed or does not load. */
  get(name: string): Recipe {
    if (!RECIPE_NAME.test(name) || !this.#names().includes(name)) {
      throw new RecipeNotFound(`no recipe named ${JSON.stringify(name)} is installed`);
    }
    try {
      return loadRecipe(join(this.opts.recipesDir, name));
    } catch (err) {
      if (err instanceof RecipeError) {
        throw new RecipeNotFound(`recipe ${JSON.stringify(name)} cannot be built: ${err.message}`);
      }
      throw err;
    }
  }

  #names(): string[] {
    const dir = this.opts.recipesDir;
    if (!existsSync(dir)) return [];
    return readdirSync(dir, { withFileTypes: true })
      .filter(
        (e) =>
          e.isDirectory() &&
          RECIPE_NAME.test(e.name) &&
          existsSync(join(dir, e.name, "recipe.json")),
      )
      .map((e) => e.name)
      .sort();
  }
}
