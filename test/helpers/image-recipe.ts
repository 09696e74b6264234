import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, join, relative, resolve } from "node:path";
import { hostSources } from "../guest/harness/image.js";

/**
 * Runs an image recipe of images/ (a folder with recipe.json and the step scripts it
 * names) and caches its output by a hash of the folder's content:
 * ${BOOTFLEET_IMAGE_CACHE:-/var/cache/bootfleet-test}/images/<name>-<hash>.raw.
 *
 * A TypeScript module rather than a shell runner because the build-as-a-job API will run
 * the same steps one by one with progress, logs and cancel: loadRecipe() validates the
 * manifest, stepEnvironment() is the whole contract between runner and scripts, runStep()
 * runs one step and reports its "PROGRESS <percent> <text>" lines, and buildImage() is
 * the loop a job would drive. It lives in test/helpers/ until that API promotes it.
 */

/** Bump when this runner changes what a recipe produces in a way its files do not show. */
export const RUNNER_VERSION = 1;
/** A cold Debian build took a few minutes here; a loaded CI machine gets headroom. */
export const BUILD_TIMEOUT_MS = 25 * 60_000;
export const IMAGES_DIR = resolve(import.meta.dirname, "../../images");

const PARTITION_TYPES = {
  "bios-boot": "21686148-6449-6E6F-744E-656564454649",
  esp: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
  linux: "0FC63DAF-8483-4772-8E3D-693D7DE4709F",
} as const;
type PartitionType = keyof typeof PARTITION_TYPES;

export interface RecipePartition {
  /** Short id, used in the scripts' environment: BF_PART_<ID>_START ... */
  id: string;
  /** The GPT partition name. */
  name: string;
  type: PartitionType;
  /** Omitted for the last partition: it takes the rest of the disk. */
  sizeMiB?: number;
  fs?: string;
  label?: string;
}

export interface RecipeStep {
  id: string;
  title: string;
  /** A script in the recipe's folder, run with sh. */
  script: string;
}

export interface Recipe {
  dir: string;
  name: string;
  description: string;
  base: { distribution: "debian"; suite: string; variant: string };
  packages: string[];
  dpkgExcludes: string[];
  hostname: string;
  layout: { table: "gpt"; sizeMiB: number; partitions: RecipePartition[] };
  steps: RecipeStep[];
  output: { file: string; format: "raw" };
}

/** A recipe that cannot run; the message names the file and the field. */
export class RecipeError extends Error {
  override name = "RecipeError";
}

const ID = /^[a-z][a-z0-9]{0,15}$/;
const NAME = /^[a-z0-9][a-z0-9.-]{0,62}$/;
const PACKAGE = /^[a-z0-9][a-z0-9+.-]+$/;
const FILE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function loadRecipe(dir: string): Recipe {
  const file = join(dir, "recipe.json");
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new RecipeError(`${file}: ${(err as Error).message}`);
  }
  const fail = (field: string, why: string): never => {
    throw new RecipeError(`${file}: ${field} ${why}`);
  };
  const str = (field: string, v: unknown, re?: RegExp): string => {
    if (typeof v !== "string" || v === "") return fail(field, "must be a non-empty string");
    if (re && !re.test(v)) return fail(field, `has an unsafe value ${JSON.stringify(v)}`);
    return v;
  };
  const arr = (field: string, v: unknown): unknown[] =>
    Array.isArray(v) ? v : fail(field, "must be a list");
  const obj = (field: string, v: unknown): Record<string, unknown> =>
    v && typeof v === "object" && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : fail(field, "must be an object");
  const mib = (field: string, v: unknown): number =>
    typeof v === "number" && Number.isInteger(v) && v > 0 && v <= 1024 * 1024
      ? v
      : fail(field, "must be a whole number of MiB");

  const name = str("name", raw.name, NAME);
  if (name !== basename(dir)) fail("name", `must be the folder's name (${basename(dir)})`);
  const base = obj("base", raw.base);
  if (base.distribution !== "debian") fail("base.distribution", 'must be "debian"');
  const layout = obj("layout", raw.layout);
  if (layout.table !== "gpt") fail("layout.table", 'must be "gpt"');
  const partitions = arr("layout.partitions", layout.partitions).map((p, i) => {
    const o = obj(`layout.partitions[${i}]`, p);
    const type = str(`layout.partitions[${i}].type`, o.type);
    if (!(type in PARTITION_TYPES)) {
      fail(`layout.partitions[${i}].type`, `must be one of ${Object.keys(PARTITION_TYPES)}`);
    }
    return {
      id: str(`layout.partitions[${i}].id`, o.id, ID),
      name: str(`layout.partitions[${i}].name`, o.name, /^[A-Za-z0-9 -]{1,36}$/),
      type: type as PartitionType,
      ...(o.sizeMiB === undefined
        ? {}
        : { sizeMiB: mib(`layout.partitions[${i}].sizeMiB`, o.sizeMiB) }),
      ...(o.fs === undefined ? {} : { fs: str(`layout.partitions[${i}].fs`, o.fs, ID) }),
      ...(o.label === undefined
        ? {}
        : { label: str(`layout.partitions[${i}].label`, o.label, /^[A-Za-z0-9_-]{1,11}$/) }),
    };
  });
  partitions.forEach((p, i) => {
    if (p.sizeMiB === undefined && i !== partitions.length - 1) {
      fail(`layout.partitions[${i}].sizeMiB`, "may only be left out on the last partition");
    }
  });
  if (new Set(partitions.map((p) => p.id)).size !== partitions.length) {
    fail("layout.partitions", "ids must differ");
  }
  const steps = arr("steps", raw.steps).map((s, i) => {
    const o = obj(`steps[${i}]`, s);
    const script = str(`steps[${i}].script`, o.script, FILE);
    if (!existsSync(join(dir, script)))
      fail(`steps[${i}].script`, `names a missing file ${script}`);
    return {
      id: str(`steps[${i}].id`, o.id, ID),
      title: str(`steps[${i}].title`, o.title),
      script,
    };
  });
  if (steps.length === 0) fail("steps", "must name at least one step");
  if (new Set(steps.map((s) => s.id)).size !== steps.length) fail("steps", "ids must differ");
  const output = obj("output", raw.output);
  if (output.format !== "raw") fail("output.format", 'must be "raw"');
  return {
    dir,
    name,
    description: str("description", raw.description),
    base: {
      distribution: "debian",
      suite: str("base.suite", base.suite, NAME),
      variant: str("base.variant", base.variant, NAME),
    },
    packages: arr("packages", raw.packages).map((p, i) => str(`packages[${i}]`, p, PACKAGE)),
    dpkgExcludes: arr("dpkgExcludes", raw.dpkgExcludes ?? []).map((p, i) =>
      str(`dpkgExcludes[${i}]`, p, /^\/[A-Za-z0-9_/.*-]+$/),
    ),
    hostname: str("hostname", raw.hostname, NAME),
    layout: { table: "gpt", sizeMiB: mib("layout.sizeMiB", layout.sizeMiB), partitions },
    steps,
    output: { file: str("output.file", output.file, FILE), format: "raw" },
  };
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

/**
 * Everything a step script gets, as environment variables: the recipe's fields, the
 * layout in sectors, the work dir (shared by all steps of one build) and the apt sources.
 */
export function stepEnvironment(recipe: Recipe, workDir: string, sources: string[]) {
  const env: Record<string, string> = {
    BF_RECIPE_DIR: recipe.dir,
    BF_RECIPE_NAME: recipe.name,
    BF_WORK_DIR: workDir,
    BF_OUTPUT: join(workDir, recipe.output.file),
    BF_SUITE: recipe.base.suite,
    BF_VARIANT: recipe.base.variant,
    BF_PACKAGES: recipe.packages.join(" "),
    BF_DPKG_EXCLUDES: recipe.dpkgExcludes.join(" "),
    BF_APT_SOURCES: sources.join("\n"),
    BF_HOSTNAME: recipe.hostname,
    BF_DISK_SIZE_MIB: String(recipe.layout.sizeMiB),
  };
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

/**
 * sha256 over every file of the recipe folder (path, executable bit, content), the apt
 * sources it installs from and RUNNER_VERSION: a changed script or package list builds a
 * new image, an unchanged recipe is found in the cache.
 */
export function recipeHash(recipe: Recipe, sources: string[]): string {
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

export function cacheRoot(): string {
  return join(process.env.BOOTFLEET_IMAGE_CACHE || "/var/cache/bootfleet-test", "images");
}

export interface StepProgress {
  step: RecipeStep;
  index: number;
  count: number;
  percent: number;
  message: string;
}

/**
 * Runs one step with its stdout and stderr appended to the build log; "PROGRESS n text"
 * lines on stdout go to onProgress. setpriv --pdeathsig ends the step if this process
 * dies; the signal ends it on cancel. Rejects naming the step, with the log's tail.
 */
export function runStep(
  recipe: Recipe,
  index: number,
  env: Record<string, string>,
  opts: {
    logPath: string;
    signal?: AbortSignal;
    onProgress?: (p: StepProgress) => void;
  },
): Promise<void> {
  const step = recipe.steps[index]!;
  return new Promise((resolvePromise, reject) => {
    const fd = openSync(opts.logPath, "a");
    writeFileSync(fd, `\n=== step ${step.id}: ${step.title} (${step.script})\n`);
    const p: ChildProcess = spawn(
      "setpriv",
      ["--pdeathsig", "TERM", "--", "sh", join(recipe.dir, step.script)],
      {
        cwd: env.BF_WORK_DIR,
        stdio: ["ignore", "pipe", fd],
        env: {
          PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
          LC_ALL: "C.UTF-8",
          DEBIAN_FRONTEND: "noninteractive",
          ...env,
        },
      },
    );
    closeSync(fd);
    const report = (percent: number, message: string) =>
      opts.onProgress?.({ step, index, count: recipe.steps.length, percent, message });
    report(0, step.title);
    let pending = "";
    p.stdout?.on("data", (d: Buffer) => {
      writeFileSync(opts.logPath, d, { flag: "a" });
      pending += d.toString();
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        const m = /^PROGRESS (\d{1,3}) (.*)$/.exec(line);
        if (m) report(Math.min(100, Number(m[1])), m[2] ?? "");
      }
    });
    const onAbort = () => p.kill("SIGTERM");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    p.on("error", (err) => reject(new Error(`step ${step.id}: ${err.message}`)));
    p.on("close", (code, sig) => {
      opts.signal?.removeEventListener("abort", onAbort);
      if (code === 0) return resolvePromise();
      const tail = readFileSync(opts.logPath, "utf8").split("\n").slice(-30).join("\n");
      reject(
        new Error(
          `step ${step.id} (${step.script}) failed (${sig ?? `exit ${code}`}); ${opts.logPath} ends:\n${tail}`,
        ),
      );
    });
  });
}

export interface BuiltImage {
  path: string;
  hash: string;
  /** True when this call built it, false when it came from the cache. */
  built: boolean;
  seconds: number;
  /** Seconds per step, for a build. */
  stepSeconds?: Record<string, number>;
}

/**
 * The cached image of the recipe in images/<name>, built first if missing. Concurrent
 * callers wait for one build (an flock the kernel drops if the builder dies); the build
 * runs in a work dir beside the cache and its output is renamed into place last, so a
 * killed build never leaves a file that looks done. Images of older versions of the same
 * recipe are removed after a build.
 */
export async function buildImage(
  name: string,
  opts: {
    recipesDir?: string;
    log?: (msg: string) => void;
    onProgress?: (p: StepProgress) => void;
    timeoutMs?: number;
    signal?: AbortSignal;
  } = {},
): Promise<BuiltImage> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const recipe = loadRecipe(join(opts.recipesDir ?? IMAGES_DIR, name));
  const sources = hostSources(recipe.base.suite);
  const hash = recipeHash(recipe, sources);
  const root = cacheRoot();
  const final = join(root, `${recipe.name}-${hash}.raw`);
  const found = (built: boolean) => ({
    path: final,
    hash,
    built,
    seconds: (Date.now() - started) / 1000,
  });
  if (existsSync(final)) return found(false);

  mkdirSync(root, { recursive: true });
  const timeoutMs = opts.timeoutMs ?? BUILD_TIMEOUT_MS;
  log(`image ${recipe.name}-${hash} not cached: waiting for the build lock`);
  const lock = await acquireLock(join(root, `${recipe.name}-${hash}.lock`), timeoutMs);
  const work = join(root, `.build-${recipe.name}-${hash}-${process.pid}`);
  const timeout = AbortSignal.timeout(Math.max(1, started + timeoutMs - Date.now()));
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  try {
    if (existsSync(final)) return found(false);
    for (const stale of readdirSync(root)) {
      if (stale.startsWith(`.build-${recipe.name}-`)) {
        log(`removing the unfinished build ${stale}`);
        rmSync(join(root, stale), { recursive: true, force: true });
      }
    }
    mkdirSync(work);
    const env = stepEnvironment(recipe, work, sources);
    const logPath = join(root, `${recipe.name}-${hash}.log`);
    writeFileSync(logPath, `build of ${recipe.name}-${hash} started ${new Date().toISOString()}\n`);
    const stepSeconds: Record<string, number> = {};
    for (let i = 0; i < recipe.steps.length; i++) {
      const t0 = Date.now();
      log(`step ${i + 1}/${recipe.steps.length} ${recipe.steps[i]!.id}: ${recipe.steps[i]!.title}`);
      await runStep(recipe, i, env, {
        logPath,
        signal,
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      });
      if (signal.aborted) throw new Error(`build of ${recipe.name} stopped: ${signal.reason}`);
      stepSeconds[recipe.steps[i]!.id] = (Date.now() - t0) / 1000;
    }
    const output = env.BF_OUTPUT!;
    if (!existsSync(output)) {
      throw new Error(`the recipe's steps ended without writing ${recipe.output.file}`);
    }
    renameSync(output, final);
    const result = { ...found(true), stepSeconds };
    writeFileSync(
      join(root, `${recipe.name}-${hash}.json`),
      `${JSON.stringify({ name: recipe.name, builtAt: new Date().toISOString(), ...result }, null, 2)}\n`,
    );
    for (const f of readdirSync(root)) {
      if (
        f.startsWith(`${recipe.name}-`) &&
        !f.startsWith(`${recipe.name}-${hash}`) &&
        !f.endsWith(".lock")
      ) {
        log(`removing the image of an older recipe: ${f}`);
        rmSync(join(root, f), { force: true });
      }
    }
    return result;
  } finally {
    if (process.env.BOOTFLEET_IMAGE_KEEP_WORK !== "1") {
      rmSync(work, { recursive: true, force: true });
    }
    lock.release();
  }
}

/**
 * An exclusive lock that the kernel drops when this process dies: flock(1) holds it for
 * as long as its `cat` reads our stdin, and a killed process closes that pipe.
 */
async function acquireLock(path: string, timeoutMs: number): Promise<{ release(): void }> {
  const p: ChildProcess = spawn(
    "flock",
    ["-w", String(Math.ceil(timeoutMs / 1000)), path, "sh", "-c", "echo locked; exec cat"],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let err = "";
  p.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  await new Promise<void>((res, rej) => {
    p.stdout?.once("data", () => res());
    p.once("error", rej);
    p.once("exit", (code) => rej(new Error(`flock ${path} gave up (exit ${code}): ${err}`)));
  });
  p.removeAllListeners("exit");
  return { release: () => p.stdin?.end() };
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
