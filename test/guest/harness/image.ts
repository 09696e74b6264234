import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { hostSources } from "../../../src/host/apt-sources.js";

export { hostSources };

/**
 * The Debian guest's root disk, kernel and initrd, built once per recipe with mmdebstrap
 * and cached under ${BOOTFLEET_GUEST_CACHE:-/var/cache/bootfleet-test}/guest-<hash>/.
 * The hash covers everything that shapes the image (recipe.json, customize.sh, this
 * harness's version and the apt sources), so a changed recipe builds a new folder and an
 * unchanged one is found in milliseconds. A build happens in a temporary folder renamed
 * into place at the very end, under a lock, so a killed or concurrent build never leaves
 * a folder that looks done.
 */

/** Bump when image.ts changes what it builds in a way the recipe files do not show. */
export const HARNESS_VERSION = 2;
export const HARNESS_DIR = import.meta.dirname;
const RECIPE_FILE = join(HARNESS_DIR, "recipe.json");
const CUSTOMIZE_FILE = join(HARNESS_DIR, "customize.sh");
/**
 * A cold build took 13.5 min on a loaded 2-core machine (mostly mmdebstrap), and 29 min
 * when `npm test` ran it beside the golden image's build, the tests and a benchmark at load
 * 10-30: the bound is the golden image builder's (45 min), well inside CI's own cut.
 */
export const BUILD_TIMEOUT_MS = 45 * 60_000;

const run = promisify(execFile);
/** dpkg-divert, renaming: a package's update-initramfs goes aside while ours is /bin/true. */
const DIVERT = "dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.bf-guest";

export interface Recipe {
  harnessVersion: number;
  suite: string;
  variant: string;
  packages: string[];
  dpkgExcludes: string[];
  hostname: string;
  diskSizeMiB: number;
  /** One-line apt sources, taken from the host's apt configuration. */
  sources: string[];
  /** sha256 of customize.sh. */
  customize: string;
}

export interface GuestImage {
  dir: string;
  disk: string;
  kernel: string;
  initrd: string;
  hash: string;
  recipe: Recipe;
  /** uname -r of the guest kernel, e.g. "6.1.0-56-amd64". */
  kernelRelease: string;
  /** True when this call built the image, false when it was in the cache. */
  built: boolean;
  /** How long this call took (the build, or the cache lookup). */
  seconds: number;
}

export function cacheRoot(): string {
  return process.env.BOOTFLEET_GUEST_CACHE || "/var/cache/bootfleet-test";
}

export function loadRecipe(sourcesDir = "/etc/apt"): Recipe {
  const file = JSON.parse(readFileSync(RECIPE_FILE, "utf8")) as Omit<
    Recipe,
    "harnessVersion" | "sources" | "customize"
  >;
  return {
    harnessVersion: HARNESS_VERSION,
    ...file,
    sources: hostSources(file.suite, sourcesDir),
    customize: createHash("sha256").update(readFileSync(CUSTOMIZE_FILE)).digest("hex"),
  };
}

export function recipeHash(recipe: Recipe): string {
  return createHash("sha256").update(canonicalJson(recipe)).digest("hex").slice(0, 16);
}

const IMAGE_FILES = ["disk.raw", "vmlinuz", "initrd.img", "recipe.json"] as const;

function imageAt(dir: string, hash: string, built: boolean, started: number): GuestImage | null {
  if (!IMAGE_FILES.every((f) => existsSync(join(dir, f)))) return null;
  const meta = JSON.parse(readFileSync(join(dir, "recipe.json"), "utf8")) as {
    recipe: Recipe;
    kernelRelease: string;
  };
  return {
    dir,
    disk: join(dir, "disk.raw"),
    kernel: join(dir, "vmlinuz"),
    initrd: join(dir, "initrd.img"),
    hash,
    recipe: meta.recipe,
    kernelRelease: meta.kernelRelease,
    built,
    seconds: (Date.now() - started) / 1000,
  };
}

/**
 * Returns the cached image for the current recipe, building it first when missing.
 * Concurrent callers (tap runs test files in parallel) wait for one build.
 */
export async function ensureGuestImage(
  opts: { log?: (msg: string) => void; timeoutMs?: number } = {},
): Promise<GuestImage> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const recipe = loadRecipe();
  const hash = recipeHash(recipe);
  const root = cacheRoot();
  const final = join(root, `guest-${hash}`);
  const cached = imageAt(final, hash, false, started);
  if (cached) return cached;

  mkdirSync(root, { recursive: true });
  const timeoutMs = opts.timeoutMs ?? BUILD_TIMEOUT_MS;
  log(`guest image ${hash} not cached: waiting for the build lock`);
  const lock = await acquireLock(join(root, `guest-${hash}.lock`), timeoutMs);
  try {
    const done = imageAt(final, hash, false, started);
    if (done) return done; // another process built it while we waited
    for (const stale of readdirSync(root).filter((f) => f.startsWith(`.build-${hash}-`))) {
      log(`removing the unfinished build ${stale}`);
      await removeTree(join(root, stale));
    }
    const tmp = join(root, `.build-${hash}-${process.pid}`);
    mkdirSync(tmp);
    await build(recipe, hash, tmp, log, started + timeoutMs - Date.now());
    renameSync(tmp, final);
    const img = imageAt(final, hash, true, started);
    if (!img) throw new Error(`built ${final} but it is incomplete`);
    log(`guest image ${hash} built in ${img.seconds.toFixed(0)} s`);
    await pruneOtherImages(root, hash, log);
    return img;
  } finally {
    lock.release();
  }
}

async function build(
  recipe: Recipe,
  hash: string,
  tmp: string,
  log: (msg: string) => void,
  timeoutMs: number,
): Promise<void> {
  const rootDir = join(tmp, "root");
  const buildLog = join(tmp, "build.log");
  const t0 = Date.now();
  log(`mmdebstrap ${recipe.suite} (${recipe.packages.length} packages) into ${rootDir}`);
  await runLogged(
    "mmdebstrap",
    [
      "--mode=root",
      `--variant=${recipe.variant}`,
      '--aptopt=APT::Install-Recommends "false"',
      ...recipe.dpkgExcludes.map((p) => `--dpkgopt=path-exclude=${p}`),
      // Licences stay, as Debian asks of anything that strips documentation.
      "--dpkgopt=path-include=/usr/share/doc/*/copyright",
      // A throw-away test image: no fsync per unpacked file.
      "--dpkgopt=force-unsafe-io",
      // update-initramfs does nothing while packages install: the kernel and the packages
      // with initramfs hooks (lvm2, open-iscsi, xfsprogs, thin-provisioning-tools) asked for
      // Debian's default initrd (MODULES=most, zstd), and customize.sh builds the one the
      // guest boots anyway. From the first package configured to mmdebstrap's end: 12.9 min
      // with it, 1.5 min without (dpkg's files' times in two cold builds on this 2-core VM).
      // Restored before customize.sh runs.
      `--essential-hook=chroot "$1" ${DIVERT} --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"`,
      `--customize-hook=rm "$1/usr/sbin/update-initramfs" && chroot "$1" ${DIVERT} --remove /usr/sbin/update-initramfs`,
      `--include=${recipe.packages.join(",")}`,
      recipe.suite,
      rootDir,
      ...recipe.sources,
    ],
    buildLog,
    timeoutMs,
  );
  const mmdebstrapSeconds = (Date.now() - t0) / 1000;
  await runLogged(
    "sh",
    [CUSTOMIZE_FILE, rootDir, recipe.hostname],
    buildLog,
    timeoutMs - (Date.now() - t0),
  );

  const kernels = readdirSync(join(rootDir, "lib/modules"));
  const kernelRelease = kernels[0];
  if (kernels.length !== 1 || !kernelRelease) {
    throw new Error(`expected one kernel in the guest, found: ${kernels.join(", ") || "none"}`);
  }
  copyFileSync(join(rootDir, "boot", `vmlinuz-${kernelRelease}`), join(tmp, "vmlinuz"));
  copyFileSync(join(rootDir, "boot", `initrd.img-${kernelRelease}`), join(tmp, "initrd.img"));
  const { stdout: packages } = await run("chroot", [
    rootDir,
    "dpkg-query",
    "-W",
    "-f",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format, not JS
    "${Package} ${Version}\\n",
  ]);
  writeFileSync(join(tmp, "packages.txt"), packages);

  // A sparse file: only the blocks mkfs writes take space, and mkfs.ext4 -d fills it
  // from the directory without mounting anything.
  const disk = join(tmp, "disk.raw");
  closeSync(openSync(disk, "w"));
  truncateSync(disk, recipe.diskSizeMiB * 1024 * 1024);
  await runLogged(
    "mkfs.ext4",
    ["-q", "-F", "-L", "bf-guest-root", "-d", rootDir, disk],
    buildLog,
    timeoutMs - (Date.now() - t0),
  );
  await removeTree(rootDir);
  writeFileSync(
    join(tmp, "recipe.json"),
    `${JSON.stringify(
      {
        hash,
        recipe,
        kernelRelease,
        builtAt: new Date().toISOString(),
        mmdebstrapSeconds,
        buildSeconds: (Date.now() - t0) / 1000,
      },
      null,
      2,
    )}\n`,
  );
}

/**
 * Runs a build step with its output appended to the build log (never to the test's
 * output: apt is verbose). On failure the error carries the log's tail. setpriv's
 * --pdeathsig ends the step if this process dies, so no orphan keeps building.
 */
function runLogged(cmd: string, args: string[], logPath: string, timeoutMs: number) {
  return new Promise<void>((resolve, reject) => {
    const fd = openSync(logPath, "a");
    writeFileSync(fd, `\n$ ${cmd} ${args.join(" ")}\n`);
    const p = spawn("setpriv", ["--pdeathsig", "TERM", "--", cmd, ...args], {
      stdio: ["ignore", fd, fd],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C.UTF-8" },
    });
    closeSync(fd);
    const timer = setTimeout(() => p.kill("SIGTERM"), Math.max(timeoutMs, 1));
    p.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${err.message}`));
    });
    p.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve();
      const tail = readFileSync(logPath, "utf8").split("\n").slice(-40).join("\n");
      reject(
        new Error(
          `${cmd} failed (${signal ?? `exit ${code}`}${signal === "SIGTERM" ? `, time-out ${timeoutMs} ms` : ""}); ${logPath} ends:\n${tail}`,
        ),
      );
    });
  });
}

/**
 * An exclusive lock that the kernel drops when this process dies: flock(1) holds it for
 * as long as its `cat` reads our stdin, and a killed test closes that pipe.
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
  await new Promise<void>((resolve, reject) => {
    p.stdout?.once("data", () => resolve());
    p.once("error", reject);
    p.once("exit", (code) => reject(new Error(`flock ${path} gave up (exit ${code}): ${err}`)));
  });
  p.removeAllListeners("exit");
  return {
    release: () => {
      p.stdin?.end();
    },
  };
}

/**
 * Removes the images of older recipes (~800 MB each), so a developer's cache holds one.
 * A guest still running from one keeps its open backing file until it stops.
 */
async function pruneOtherImages(root: string, hash: string, log: (msg: string) => void) {
  for (const f of readdirSync(root)) {
    // Lock files stay: another recipe's build may hold one.
    if (!f.startsWith("guest-") || f.endsWith(".lock") || f === `guest-${hash}`) continue;
    log(`removing the image of another recipe: ${f}`);
    await removeTree(join(root, f));
  }
}

/**
 * Removes a build folder. An interrupted mmdebstrap can leave /proc, /sys or /dev/pts
 * mounted inside its root: unmount whatever is below the folder first, and never cross
 * into another file system.
 */
async function removeTree(dir: string): Promise<void> {
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run("umount", ["--lazy", m]).catch(() => undefined);
  await run("rm", ["-rf", "--one-file-system", "--", dir]);
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}
