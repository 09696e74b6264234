// bootfleet as committed at a git ref, built into a folder of its own with the project's
// build config: a benchmark then measures that commit, and helpers editing src/ in the same
// checkout neither break its build nor change what is measured.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";

/** What a snapshot holds: enough to build and run bin/bootfleetd.js. */
const SNAPSHOT_PATHS = [
  "src",
  "bin",
  "ipxe",
  "package.json",
  "tsconfig.json",
  "tsconfig.build.json",
];

/**
 * Extracts `ref` of the repository at `repo` into `dir` (made if missing), links the
 * checkout's node_modules and runs tsc -p tsconfig.build.json there, then the daemon's bundler
 * where the commit has one (as `npm run build` does; the web UI is not built). Returns the
 * short commit.
 */
export function buildSnapshot(
  repo: string,
  ref: string,
  dir: string,
  log: (msg: string) => void,
): string {
  mkdirSync(dir, { recursive: true });
  const commit = execFileSync("git", ["-C", repo, "rev-parse", "--short", ref], {
    encoding: "utf8",
  }).trim();
  // Since fba71ca bin/bootfleetd.js runs a bundle made by scripts/build-daemon.mjs; older
  // commits have no such script and run dist/ as tsc wrote it.
  const bundler = "scripts/build-daemon.mjs";
  const paths = hasPath(repo, ref, bundler) ? [...SNAPSHOT_PATHS, bundler] : SNAPSHOT_PATHS;
  const tar = execFileSync("git", ["-C", repo, "archive", ref, ...paths], {
    maxBuffer: 1 << 30, // the iPXE binaries alone exceed execFileSync's 1 MB default
  });
  execFileSync("tar", ["-x", "-C", dir], { input: tar });
  symlinkSync(join(repo, "node_modules"), join(dir, "node_modules"));
  log(`building bootfleet ${commit} (tsc -p tsconfig.build.json in a snapshot)`);
  execFileSync(
    process.execPath,
    [join(repo, "node_modules/typescript/bin/tsc"), "-p", join(dir, "tsconfig.build.json")],
    { stdio: "inherit" },
  );
  if (existsSync(join(dir, bundler))) {
    execFileSync(process.execPath, [join(dir, bundler)], { cwd: dir, stdio: "inherit" });
  }
  return commit;
}

function hasPath(repo: string, ref: string, path: string): boolean {
  try {
    execFileSync("git", ["-C", repo, "cat-file", "-e", `${ref}:${path}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
