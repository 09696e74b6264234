// bootfleet as committed at a git ref, built into a folder of its own with the project's
// build config: a benchmark then measures that commit, and helpers editing src/ in the same
// checkout neither break its build nor change what is measured.

import { execFileSync } from "node:child_process";
import { mkdirSync, symlinkSync } from "node:fs";
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
 * checkout's node_modules and runs tsc -p tsconfig.build.json there. Returns the short commit.
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
  // The iPXE binaries alone exceed execFileSync's 1 MB default buffer.
  const tar = execFileSync("git", ["-C", repo, "archive", ref, ...SNAPSHOT_PATHS], {
    maxBuffer: 1 << 30,
  });
  execFileSync("tar", ["-x", "-C", dir], { input: tar });
  symlinkSync(join(repo, "node_modules"), join(dir, "node_modules"));
  log(`building bootfleet ${commit} (tsc -p tsconfig.build.json in a snapshot)`);
  execFileSync(
    process.execPath,
    [join(repo, "node_modules/typescript/bin/tsc"), "-p", join(dir, "tsconfig.build.json")],
    { stdio: "inherit" },
  );
  return commit;
}
