import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import t from "tap";

// The import rules of .dependency-cruiser.cjs, run the way `npm run lint` runs them, on
// small trees: one with a cycle, one with forbidden directions, one clean.
const REPO = join(import.meta.dirname, "../..");
const CONFIG = join(REPO, ".dependency-cruiser.cjs");
const DEPCRUISE = join(REPO, "node_modules/.bin/depcruise");
const FIXTURES = join(import.meta.dirname, "fixtures/depcruise");

async function cruise(fixture: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(
      DEPCRUISE,
      ["src", "--config", CONFIG, "--output-type", "err"],
      { cwd: join(FIXTURES, fixture), timeout: 60_000 },
    );
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, out: `${e.stdout}${e.stderr}` };
  }
}

t.test("npm run lint runs dependency-cruiser with the repository's rules", async (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8"));
  t.match(pkg.scripts.lint, /biome check/);
  t.match(pkg.scripts.lint, /depcruise src bin --config \.dependency-cruiser\.cjs/);
});

t.test("an import cycle fails, naming no-circular and the modules", async (t) => {
  const { code, out } = await cruise("cycle");
  t.not(code, 0, "non-zero exit");
  t.match(out, /error no-circular: src\/netboot\/a\.ts/);
  t.match(out, /src\/netboot\/b\.ts/);
});

t.test("forbidden directions fail, each naming its rule", async (t) => {
  const { code, out } = await cruise("forbidden");
  t.not(code, 0, "non-zero exit");
  t.match(out, "error domain-not-to-edge: src/netboot/plan.ts → src/api/errors.ts");
  t.match(out, "error daemon-is-the-top: src/netboot/plan.ts → src/daemon/config.ts");
  t.match(out, "error store-is-a-leaf: src/store/db.ts → src/netboot/plan.ts");
});

t.test("a tree that keeps the rules passes", async (t) => {
  const { code, out } = await cruise("clean");
  t.equal(code, 0, out);
  t.match(out, /no dependency violations found/);
});
