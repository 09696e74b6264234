import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import * as z from "zod";

/**
 * recipe.json, the manifest of one image recipe (a folder of images/): what the recipe
 * says it builds and the step scripts that build it. The format is documented in
 * images/README.md; this schema is its only reader.
 */

/** GPT partition type GUIDs by the names a manifest uses. */
export const PARTITION_TYPES = {
  "bios-boot": "21686148-6449-6E6F-744E-656564454649",
  esp: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
  linux: "0FC63DAF-8483-4772-8E3D-693D7DE4709F",
} as const;
export type PartitionType = keyof typeof PARTITION_TYPES;

/**
 * Names of the steps a build job runs after the recipe's own (copying the output into
 * the image library, then the upload's import steps): a recipe step may not take one.
 */
export const RESERVED_STEP_IDS = ["copy", "inspect", "check", "convert", "finalize"] as const;

/** A recipe's name: its folder's name. No "/" and no "..", so it never leaves recipes_dir. */
export const RECIPE_NAME = /^(?!.*\.\.)[a-z0-9][a-z0-9.-]{0,62}$/;
const ID = /^[a-z][a-z0-9]{0,15}$/;
const PACKAGE = /^[a-z0-9][a-z0-9+.-]+$/;
const FILE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const unsafe = (what: string) => ({ message: `has an unsafe value (${what})` });
const mib = z
  .number()
  .int("must be a whole number of MiB")
  .positive("must be a whole number of MiB")
  .max(1024 * 1024, "must be at most 1 TiB");

const partitionSchema = z
  .object({
    /** Short id, used in the scripts' environment: BF_PART_<ID>_START ... */
    id: z.string().regex(ID, unsafe("a-z then a-z0-9, at most 16")),
    /** The GPT partition name. */
    name: z.string().regex(/^[A-Za-z0-9 -]{1,36}$/, unsafe("letters, digits, space, -")),
    type: z.enum(Object.keys(PARTITION_TYPES) as [PartitionType, ...PartitionType[]], {
      message: `must be one of ${Object.keys(PARTITION_TYPES).join(", ")}`,
    }),
    /** Omitted for the last partition: it takes the rest of the disk. */
    sizeMiB: mib.optional(),
    fs: z.string().regex(ID, unsafe("a file system name")).optional(),
    label: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,11}$/, unsafe("at most 11 of A-Z a-z 0-9 _ -"))
      .optional(),
  })
  .strict();

const stepSchema = z
  .object({
    id: z.string().regex(ID, unsafe("a-z then a-z0-9, at most 16")),
    title: z.string().min(1, "must be a non-empty string").max(200),
    /** A script in the recipe's folder, run with sh. */
    script: z.string().regex(FILE, unsafe("a file name in the recipe's folder")),
  })
  .strict();

export const recipeSchema = z
  .object({
    name: z.string().regex(RECIPE_NAME, unsafe("a-z 0-9 . -, at most 63")),
    description: z.string().min(1, "must be a non-empty string").max(2000),
    /** Optional: a recipe that installs no distribution (a data disk) has none. */
    base: z
      .object({
        distribution: z.literal("debian", { message: 'must be "debian"' }),
        suite: z.string().regex(RECIPE_NAME, unsafe("a suite name")),
        variant: z.string().regex(RECIPE_NAME, unsafe("a variant name")),
      })
      .strict()
      .optional(),
    packages: z.array(z.string().regex(PACKAGE, unsafe("a Debian package name"))).default([]),
    /** dpkg path-exclude patterns (passed as they are: the scripts must not glob them). */
    dpkgExcludes: z
      .array(z.string().regex(/^\/[A-Za-z0-9_/.*-]+$/, unsafe("a path pattern")))
      .default([]),
    /** The host name when no iBFT gives one. */
    hostname: z.string().regex(RECIPE_NAME, unsafe("a host name")).optional(),
    layout: z
      .object({
        table: z.literal("gpt", { message: 'must be "gpt"' }),
        sizeMiB: mib,
        partitions: z.array(partitionSchema).min(1, "must name at least one partition"),
      })
      .strict(),
    steps: z.array(stepSchema).min(1, "must name at least one step"),
    output: z
      .object({
        file: z.string().regex(FILE, unsafe("a file name")),
        format: z.literal("raw", { message: 'must be "raw"' }),
      })
      .strict(),
  })
  .strict()
  .superRefine((r, ctx) => {
    r.layout.partitions.forEach((p, i) => {
      if (p.sizeMiB === undefined && i !== r.layout.partitions.length - 1) {
        ctx.addIssue({
          code: "custom",
          path: ["layout", "partitions", i, "sizeMiB"],
          message: "may only be left out on the last partition",
        });
      }
    });
    if (new Set(r.layout.partitions.map((p) => p.id)).size !== r.layout.partitions.length) {
      ctx.addIssue({ code: "custom", path: ["layout", "partitions"], message: "ids must differ" });
    }
    if (new Set(r.steps.map((s) => s.id)).size !== r.steps.length) {
      ctx.addIssue({ code: "custom", path: ["steps"], message: "ids must differ" });
    }
    r.steps.forEach((s, i) => {
      if ((RESERVED_STEP_IDS as readonly string[]).includes(s.id)) {
        ctx.addIssue({
          code: "custom",
          path: ["steps", i, "id"],
          message: `"${s.id}" is the name of a step the build job adds (${RESERVED_STEP_IDS.join(", ")})`,
        });
      }
    });
  });

export type RecipeManifest = z.infer<typeof recipeSchema>;
export type RecipePartition = RecipeManifest["layout"]["partitions"][number];
export type RecipeStep = RecipeManifest["steps"][number];

/** A manifest that passed validation, with the folder it was read from. */
export interface Recipe extends RecipeManifest {
  dir: string;
}

/** A recipe that cannot run; the message names the file and the field. */
export class RecipeError extends Error {
  override name = "RecipeError";
}

/** "layout.partitions[0].type" for zod's ["layout", "partitions", 0, "type"]. */
function fieldName(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => (typeof p === "number" ? `[${p}]` : `${i ? "." : ""}${String(p)}`))
    .join("");
}

/** Reads and validates DIR/recipe.json; throws a RecipeError naming the file and field. */
export function loadRecipe(dir: string): Recipe {
  const file = join(dir, "recipe.json");
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new RecipeError(`${file}: ${(err as Error).message}`);
  }
  const parsed = recipeSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = fieldName(issue.path) || "(the manifest)";
    throw new RecipeError(`${file}: ${field} ${issue.message}`);
  }
  const recipe = parsed.data;
  if (recipe.name !== basename(dir)) {
    throw new RecipeError(`${file}: name must be the folder's name (${basename(dir)})`);
  }
  recipe.steps.forEach((s, i) => {
    if (!existsSync(join(dir, s.script))) {
      throw new RecipeError(`${file}: steps[${i}].script names a missing file ${s.script}`);
    }
  });
  return { ...recipe, dir };
}

/** The partitions with their sectors (512 B): aligned to 1 MiB, the first at 1 MiB. */
export function partitionSectors(recipe: Recipe) {
  const MiB = 2048;
  const total = recipe.layout.sizeMiB * MiB;
  let next = MiB;
  return recipe.layout.partitions.map((p) => {
    // The last MiB stays free for GPT's backup header.
    const sectors = p.sizeMiB !== undefined ? p.sizeMiB * MiB : total - MiB - next;
    if (sectors <= 0 || next + sectors > total - MiB) {
      throw new RecipeError(
        `${recipe.dir}/recipe.json: layout does not fit ${recipe.layout.sizeMiB} MiB`,
      );
    }
    const part = { ...p, start: next, sectors, typeGuid: PARTITION_TYPES[p.type] };
    next += sectors;
    return part;
  });
}
