// `npm ci` refuses a lock file that leaves out any optional dependency a locked package
// declares ("Missing: @biomejs/cli-darwin-x64@ from lock file"), even one for another
// platform. The registry this project is built against does not carry every platform
// binary, so `npm install` here writes a lock without them and CI stops in 9 s. The
// entries are kept by hand (version, os, cpu: npm skips them on a mismatched platform
// without fetching); this test catches the next `npm install` that drops them.
import { readFileSync } from "node:fs";
import t from "tap";

interface LockEntry {
  version?: string;
  optional?: boolean;
  os?: string[];
  cpu?: string[];
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const lock = JSON.parse(
  readFileSync(new URL("../../package-lock.json", import.meta.url), "utf8"),
) as {
  packages: Record<string, LockEntry>;
};
const manifest = JSON.parse(
  readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
) as {
  allowScripts?: Record<string, boolean>;
};

/** Where npm would find `dep` from the package at `from`: its own node_modules, then each parent's. */
function resolve(from: string, dep: string): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = dir ? `${dir}/node_modules/${dep}` : `node_modules/${dep}`;
    if (candidate in lock.packages) return candidate;
    if (!dir) return undefined;
    const cut = dir.lastIndexOf("/node_modules/");
    dir = cut < 0 ? "" : dir.slice(0, cut);
  }
}

t.test("every optional dependency of a locked package is in the lock", async (t) => {
  const missing: string[] = [];
  let checked = 0;
  for (const [path, entry] of Object.entries(lock.packages)) {
    for (const dep of Object.keys(entry.optionalDependencies ?? {})) {
      checked++;
      if (!resolve(path, dep)) missing.push(`${path || "(root)"} -> ${dep}`);
    }
  }
  t.ok(checked > 0, "the lock declares optional dependencies (biome's platform binaries)");
  t.same(missing, [], "npm ci would stop on these");
});

t.test("hand-kept platform entries say which platform they are for", async (t) => {
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (!path.includes("@biomejs/cli-")) continue;
    t.ok(entry.optional, `${path} is optional`);
    t.ok(
      entry.os?.length && entry.cpu?.length,
      `${path} names os and cpu, so npm skips it elsewhere`,
    );
  }
});

t.test("every package allowed to run install scripts is locked", async (t) => {
  for (const [name, allowed] of Object.entries(manifest.allowScripts ?? {})) {
    if (!allowed) continue;
    t.ok(resolve("", name), `${name} is in the lock`);
  }
});
