import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { recipeSources, stepEnvironment } from "./environment.js";
import { recipeHash } from "./hash.js";
import type { Recipe, RecipeStep } from "./manifest.js";
import { runStepProcess, type StepStream } from "./step-process.js";

/**
 * Runs a recipe's steps in order and keeps the output in a build cache keyed by the
 * recipe's content hash: <cacheDir>/<name>-<hash>.raw, with the build log (.log) and the
 * step timings (.json) beside it. An unchanged recipe is found at once; two builds of one
 * recipe (in this process or another) wait for one another on an flock the kernel drops
 * if the builder dies; a build runs in a .build-* folder of the cache and its output is
 * renamed into place last, so a killed build never leaves a file that looks done.
 */

/** A cold Debian build took 16 to 20 minutes on a loaded 2-core machine: headroom. */
export const BUILD_TIMEOUT_MS = 45 * 60_000;

export interface StepProgress {
  step: RecipeStep;
  index: number;
  count: number;
  /** Percent of this step. */
  percent: number;
  message: string;
}

/** A step that did not end with exit 0 (or was cancelled). Its message names the step. */
export class StepFailed extends Error {
  override name = "StepFailed";
  constructor(
    readonly step: RecipeStep,
    readonly cancelled: boolean,
    how: string,
    readonly tail: readonly string[],
  ) {
    super(
      cancelled
        ? `step ${step.id} (${step.script}) was cancelled`
        : `step ${step.id} (${step.script}) failed (${how})${tail.length ? `: ${tail.slice(-3).join(" / ")}` : ""}`,
    );
  }
}

export interface BuildOptions {
  cacheDir: string;
  /** /etc/apt by default: the build host's mirror. */
  aptDir?: string;
  signal?: AbortSignal;
  /** Bounds the wait for the lock and the whole build. */
  timeoutMs?: number;
  /**
   * Wraps each step that runs (a job marks it running, then succeeded or failed). On a
   * cache hit no step runs and onCached is called instead.
   */
  runStep?: <T>(step: RecipeStep, index: number, fn: () => Promise<T>) => Promise<T>;
  onCached?: (path: string, hash: string) => void;
  onProgress?: (p: StepProgress) => void;
  onLine?: (step: RecipeStep, stream: StepStream, line: string) => void;
  /** What the builder is doing (waiting for the lock, removing old output). */
  log?: (message: string) => void;
  /** Keep the .build-* folder after the build (to look into a failed one). */
  keepWork?: boolean;
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

/** Where the recipe's output is (or would be) cached, and its key. */
export function cacheEntry(
  recipe: Recipe,
  cacheDir: string,
  aptDir?: string,
): { path: string; hash: string; cached: boolean } {
  const hash = recipeHash(recipe, recipeSources(recipe, aptDir));
  const path = join(cacheDir, `${recipe.name}-${hash}.raw`);
  return { path, hash, cached: existsSync(path) };
}

/** The cached output of the recipe, built first if missing. */
export async function buildRecipe(recipe: Recipe, opts: BuildOptions): Promise<BuiltImage> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const sources = recipeSources(recipe, opts.aptDir);
  const hash = recipeHash(recipe, sources);
  const root = opts.cacheDir;
  const stem = `${recipe.name}-${hash}`;
  const final = join(root, `${stem}.raw`);
  const found = (built: boolean): BuiltImage => ({
    path: final,
    hash,
    built,
    seconds: (Date.now() - started) / 1000,
  });
  const cached = () => {
    opts.onCached?.(final, hash);
    return found(false);
  };
  if (existsSync(final)) return cached();

  mkdirSync(root, { recursive: true });
  const timeoutMs = opts.timeoutMs ?? BUILD_TIMEOUT_MS;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  log(`image ${stem} not cached: waiting for the build lock`);
  const lock = await acquireLock(join(root, `${stem}.lock`), timeoutMs, signal);
  const work = join(root, `.build-${stem}-${process.pid}`);
  try {
    if (existsSync(final)) return cached();
    for (const stale of readdirSync(root)) {
      // Only builds of this key: they held this lock, which is ours now, so they are dead.
      if (stale.startsWith(`.build-${stem}-`)) {
        log(`removing the unfinished build ${stale}`);
        rmSync(join(root, stale), { recursive: true, force: true });
      }
    }
    mkdirSync(work);
    const env = stepEnvironment(recipe, work, sources);
    const logPath = join(root, `${stem}.log`);
    await writeFile(logPath, `build of ${stem} started ${new Date().toISOString()}\n`);
    // Appends in order without awaiting each line: one chain of writes.
    let logging = Promise.resolve();
    const toLog = (text: string) => {
      logging = logging.then(() => appendFile(logPath, text)).catch(() => {});
    };
    const wrap = opts.runStep ?? ((_s, _i, fn) => fn());
    const stepSeconds: Record<string, number> = {};
    for (const [index, step] of recipe.steps.entries()) {
      if (signal.aborted) throw new StepFailed(step, true, "cancelled", []);
      const t0 = Date.now();
      log(`step ${index + 1}/${recipe.steps.length} ${step.id}: ${step.title}`);
      await wrap(step, index, async () => {
        toLog(`\n=== step ${step.id}: ${step.title} (${step.script})\n`);
        const report = (percent: number, message: string) =>
          opts.onProgress?.({ step, index, count: recipe.steps.length, percent, message });
        report(0, step.title);
        const r = await runStepProcess({
          script: join(recipe.dir, step.script),
          cwd: work,
          env,
          signal,
          onProgress: (percent, text) => {
            toLog(`PROGRESS ${percent} ${text}\n`);
            report(percent, text);
          },
          onLine: (stream, line) => {
            toLog(`${line}\n`);
            opts.onLine?.(step, stream, line);
          },
        });
        if (r.code !== 0 || r.cancelled) {
          const timedOut = timeout.aborted && !opts.signal?.aborted;
          const how = timedOut
            ? `the build ran past ${Math.round(timeoutMs / 60_000)} min`
            : r.signal
              ? `killed by ${r.signal}`
              : `exit ${r.code}`;
          toLog(
            `=== step ${step.id} ${r.cancelled && !timedOut ? "cancelled" : `failed (${how})`}\n`,
          );
          throw new StepFailed(step, r.cancelled && !timedOut, how, r.tail);
        }
        report(100, step.title);
      });
      stepSeconds[step.id] = (Date.now() - t0) / 1000;
    }
    await logging;
    const output = env.BF_OUTPUT!;
    if (!existsSync(output)) {
      throw new Error(`the recipe's steps ended without writing ${recipe.output.file}`);
    }
    renameSync(output, final);
    const result = { ...found(true), stepSeconds };
    await writeFile(
      join(root, `${stem}.json`),
      `${JSON.stringify({ name: recipe.name, builtAt: new Date().toISOString(), ...result }, null, 2)}\n`,
    );
    for (const f of readdirSync(root)) {
      if (f.startsWith(`${recipe.name}-`) && !f.startsWith(stem) && !f.endsWith(".lock")) {
        // Only <name>-<16 hex>.<ext>: another recipe may start with this one's name.
        if (!new RegExp(`^${escapeRe(recipe.name)}-[0-9a-f]{16}\\.(raw|log|json)$`).test(f))
          continue;
        log(`removing the image of an older recipe: ${f}`);
        rmSync(join(root, f), { force: true });
      }
    }
    return result;
  } finally {
    if (!opts.keepWork) rmSync(work, { recursive: true, force: true });
    lock.release();
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The step timings of a cached build (the .json beside it), if any. */
export function cachedBuildInfo(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path.replace(/\.raw$/, ".json"), "utf8"));
  } catch {
    return undefined;
  }
}

/**
 * An exclusive lock that the kernel drops when this process dies: flock(1) holds it for
 * as long as its `cat` reads our stdin, and a killed process closes that pipe. Aborting
 * the signal gives up the wait.
 */
async function acquireLock(
  path: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<{ release(): void }> {
  const p: ChildProcess = spawn(
    "flock",
    ["-w", String(Math.ceil(timeoutMs / 1000)), path, "sh", "-c", "echo locked; exec cat"],
    { stdio: ["pipe", "pipe", "pipe"], env: { PATH: "/usr/bin:/bin" } },
  );
  let err = "";
  p.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const onAbort = () => p.kill("SIGTERM");
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await new Promise<void>((res, rej) => {
      p.stdout?.once("data", () => res());
      p.once("error", rej);
      p.once("exit", (code) =>
        rej(
          signal.aborted
            ? new Error(`gave up waiting for the build lock ${path}: ${String(signal.reason)}`)
            : new Error(`flock ${path} gave up (exit ${code}): ${err}`),
        ),
      );
    });
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  p.removeAllListeners("exit");
  return { release: () => p.stdin?.end() };
}
