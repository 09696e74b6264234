import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { tempDir } from "../helpers/daemon.js";

export const REPO = resolve(import.meta.dirname, "../..");
export const VERSION: string = (
  JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }
).version;
export const BUILD_SCRIPT = join(REPO, "debian/build-deb.sh");
const DIST_DEB = join(REPO, "dist", `bootfleet_${VERSION}_amd64.deb`);

/** Everything the package is made from; a .deb older than any of these is stale. */
const INPUTS = [
  "src",
  "dist",
  "bin",
  "ipxe",
  "images",
  "systemd",
  "debian",
  "package.json",
  "package-lock.json",
  "README.md",
  // npm rewrites it on every install, so it stands for node_modules as a whole.
  "node_modules/.package-lock.json",
];

function newest(path: string): { file: string; mtimeMs: number } {
  const st = statSync(path);
  if (!st.isDirectory()) return { file: path, mtimeMs: st.mtimeMs };
  let best = { file: path, mtimeMs: 0 };
  for (const e of readdirSync(path)) {
    if (e.endsWith(".deb") || e.endsWith(".deb.partial")) continue;
    const n = newest(join(path, e));
    if (n.mtimeMs > best.mtimeMs) best = n;
  }
  return best;
}

function newestInput(): { file: string; mtimeMs: number } {
  return INPUTS.map((p) => join(REPO, p))
    .filter((p) => existsSync(p))
    .map(newest)
    .reduce((a, b) => (b.mtimeMs > a.mtimeMs ? b : a));
}

const WEB_SRC = join(REPO, "src/web");
const WEB_OUT = join(REPO, "dist/web/index.html");

/** A source file whose compiled output is missing or older than it, if any. */
function staleOutput(dir = join(REPO, "src")): string | undefined {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (path === WEB_SRC) {
      // Bundled as a whole (scripts/build-web.mjs), which rewrites dist/web/index.html.
      const built = existsSync(WEB_OUT) ? statSync(WEB_OUT).mtimeMs : 0;
      const input = readdirSync(path, { recursive: true, encoding: "utf8" })
        .filter((f) => !f.endsWith(".md"))
        .find((f) => statSync(join(path, f)).mtimeMs > built);
      if (input) return relative(REPO, join(path, input));
    } else if (e.isDirectory()) {
      const found = staleOutput(path);
      if (found) return found;
    } else if (e.name.endsWith(".ts")) {
      const out = join(REPO, "dist", relative(join(REPO, "src"), path).replace(/\.ts$/, ".js"));
      if (!existsSync(out) || statSync(out).mtimeMs < statSync(path).mtimeMs) {
        return relative(REPO, path);
      }
    }
  }
  return undefined;
}

const BUNDLE = join(REPO, "dist/bootfleetd.mjs");

/** The daemon's bundle (scripts/build-daemon.mjs), when older than the dist/ code it is made of. */
function staleBundle(): string | undefined {
  const built = existsSync(BUNDLE) ? statSync(BUNDLE).mtimeMs : 0;
  const dist = join(REPO, "dist");
  const input = readdirSync(dist, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".js") && !f.startsWith("web/"))
    .find((f) => statSync(join(dist, f)).mtimeMs > built);
  return input ? `dist/${input} (the bundle dist/bootfleetd.mjs)` : undefined;
}

export interface FreshDeb {
  path: string;
  /** How it was obtained, for the test log. */
  how: string;
}

/**
 * The package to test: dist/'s when it is newer than every input (`npm run package`
 * ran since the last change, as `npm test` does), or one built now into a temporary
 * folder. The build uses dist/ as it is rather than rebuilding it, since other test
 * files run from dist/ at the same time; so dist/ must be up to date with src/.
 */
export function freshDeb(t: Parameters<typeof tempDir>[0]): FreshDeb {
  const input = newestInput();
  if (existsSync(DIST_DEB) && statSync(DIST_DEB).mtimeMs > input.mtimeMs) {
    return { path: DIST_DEB, how: `${relative(REPO, DIST_DEB)} (newer than every input)` };
  }
  const stale = staleOutput() ?? staleBundle();
  if (stale) {
    throw new Error(`dist/ is older than ${stale}: run npm run build (or npm run package)`);
  }
  const out = tempDir(t, "bf-deb-");
  const r = spawnSync("bash", [BUILD_SCRIPT, "--skip-build", "--out", out], {
    cwd: REPO,
    encoding: "utf8",
    timeout: 240_000,
  });
  if (r.status !== 0) {
    throw new Error(
      `debian/build-deb.sh failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}${r.stderr}`,
    );
  }
  return {
    path: join(out, `bootfleet_${VERSION}_amd64.deb`),
    how: `built now (${relative(REPO, input.file)} is newer than dist/'s package): ${r.stdout.trim()}`,
  };
}
