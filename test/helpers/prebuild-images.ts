import { spawn } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { join, resolve } from "node:path";

/**
 * `npm test` runs this first: as root, it starts the two slow image builds (the Debian
 * golden image of images/debian-12 and the appliance tests' guest) in the background and
 * returns at once. Cold, each is an mmdebstrap of several hundred packages (10-14 minutes
 * on a 2-core machine); built inside the first test that needs them, they held a test slot
 * while the other tests needing the same image waited on its lock. Started here, they
 * download and install while the build, the type check, the lint and the unit tests run.
 * Each builder takes its own lock and cache folder, so a test that gets there first waits
 * for the build under way instead of starting another; cached images make this a no-op.
 * A failed prebuild costs nothing: the first test that needs the image builds it again
 * and reports why. Set BOOTFLEET_PREBUILD=0 to skip it.
 */

const ROOT = resolve(import.meta.dirname, "../..");
const BUILDS = [
  { name: "debian-12", script: "test/helpers/image-recipe.ts", args: ["debian-12"] },
  { name: "guest", script: "test/guest/harness/build.ts", args: [] },
];

function skipReason(): string | undefined {
  if (process.env.BOOTFLEET_PREBUILD === "0") return "BOOTFLEET_PREBUILD=0";
  if (process.getuid?.() !== 0) return "not root: the tests that boot images skip";
  return undefined;
}

const why = skipReason();
if (why) {
  console.error(`prebuild of the test images skipped (${why})`);
} else {
  const logDir = process.env.BOOTFLEET_IMAGE_CACHE || "/var/cache/bootfleet-test";
  mkdirSync(logDir, { recursive: true });
  for (const b of BUILDS) {
    const log = join(logDir, `prebuild-${b.name}.log`);
    const fd = openSync(log, "w");
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, b.script), ...b.args], {
      cwd: ROOT,
      stdio: ["ignore", fd, fd],
    });
    child.unref();
    console.error(`prebuild of the ${b.name} image started in the background (log: ${log})`);
  }
}
