import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { stepEnvironment } from "../../src/images/recipes/environment.js";
import { recipeHash } from "../../src/images/recipes/hash.js";
import { loadRecipe, partitionSectors, RecipeError } from "../../src/images/recipes/manifest.js";
import { runStepProcess } from "../../src/images/recipes/step-process.js";
import { IMAGES_DIR } from "../helpers/image-recipe.js";

// The recipe runner without a build: the manifest of images/debian-12 is valid, its layout
// becomes the sectors the step scripts use, bad manifests are refused naming the field,
// the cache key follows the folder's content, and a step's progress lines are reported.

const SOURCES = ["deb http://deb.debian.org/debian bookworm main"];

function copyRecipe(t: { teardown(fn: () => void): void }): string {
  const root = mkdtempSync(join(tmpdir(), "bf-recipe-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, "debian-12");
  cpSync(join(IMAGES_DIR, "debian-12"), dir, { recursive: true });
  return dir;
}

function editManifest(dir: string, edit: (m: Record<string, unknown>) => void): void {
  const file = join(dir, "recipe.json");
  const m = JSON.parse(readFileSync(file, "utf8"));
  edit(m);
  writeFileSync(file, JSON.stringify(m));
}

t.test("images/debian-12: manifest, layout, environment", async (t) => {
  const recipe = loadRecipe(join(IMAGES_DIR, "debian-12"));
  t.equal(recipe.name, "debian-12");
  t.same(
    recipe.steps.map((s) => s.id),
    ["rootfs", "configure", "initramfs", "grub", "disk", "verify"],
  );
  const parts = partitionSectors(recipe);
  t.same(
    parts.map((p) => [p.id, p.start, p.sectors]),
    [
      ["bios", 2048, 2048],
      ["esp", 4096, 63 * 2048],
      // The rest, less the last MiB for GPT's backup header.
      ["root", 133120, 2048 * 2048 - 133120 - 2048],
    ],
  );
  const env = stepEnvironment(recipe, "/work", SOURCES);
  t.equal(env.BF_PARTITIONS, "bios esp root");
  t.equal(env.BF_PART_ROOT_LABEL, "debroot");
  t.equal(env.BF_PART_ESP_TYPE, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
  t.equal(env.BF_APT_SOURCES, SOURCES[0]);
  t.equal(env.BF_OUTPUT, "/work/disk.raw");
});

t.test("bad manifests are refused, naming the field", async (t) => {
  const cases: [string, (m: Record<string, unknown>) => void, RegExp][] = [
    ["a name that is not the folder's", (m) => (m.name = "debian-13"), /name must be the folder/],
    ["a package with a shell character", (m) => (m.packages = ["vim;reboot"]), /packages\[0\]/],
    [
      "a missing step script",
      (m) => (m.steps = [{ id: "x", title: "X", script: "99-missing.sh" }]),
      /steps\[0\]\.script names a missing file/,
    ],
    [
      "a script outside the folder",
      (m) => (m.steps = [{ id: "x", title: "X", script: "../x.sh" }]),
      /steps\[0\]\.script has an unsafe value/,
    ],
    [
      "an unknown partition type",
      (m) => ((m.layout as { partitions: { type: string }[] }).partitions[0]!.type = "swap"),
      /layout\.partitions\[0\]\.type must be one of/,
    ],
    [
      "a layout larger than the disk",
      (m) => ((m.layout as { sizeMiB: number }).sizeMiB = 32),
      /layout does not fit 32 MiB/,
    ],
  ];
  for (const [what, edit, message] of cases) {
    const dir = copyRecipe(t);
    editManifest(dir, edit);
    let caught: unknown;
    try {
      partitionSectors(loadRecipe(dir));
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof RecipeError, `${what}: refused`);
    t.match((caught as Error | undefined)?.message, message, `${what}: named`);
  }
});

t.test("the cache key follows the recipe folder's content", async (t) => {
  const dir = copyRecipe(t);
  const before = recipeHash(loadRecipe(dir), SOURCES);
  t.equal(recipeHash(loadRecipe(dir), SOURCES), before, "stable");
  t.not(
    recipeHash(loadRecipe(dir), ["deb http://mirror.example/debian bookworm main"]),
    before,
    "another mirror, another image",
  );
  writeFileSync(join(dir, "files", "grub.cfg"), "set timeout=5\n", { flag: "a" });
  t.not(recipeHash(loadRecipe(dir), SOURCES), before, "a changed file, another image");
});

t.test("a step runs with the environment and reports its progress", async (t) => {
  const dir = copyRecipe(t);
  writeFileSync(
    join(dir, "10-rootfs.sh"),
    'echo "PROGRESS 50 half of $BF_SUITE"\necho log line\necho to stderr >&2\nexit 0\n',
  );
  const work = mkdtempSync(join(tmpdir(), "bf-recipe-work-"));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const recipe = loadRecipe(dir);
  const progress: string[] = [];
  const lines: string[] = [];
  const run = () =>
    runStepProcess({
      script: join(dir, "10-rootfs.sh"),
      cwd: work,
      env: stepEnvironment(recipe, work, SOURCES),
      onProgress: (p, text) => progress.push(`${p} ${text}`),
      onLine: (stream, line) => lines.push(`${stream}: ${line}`),
    });
  const ok = await run();
  t.equal(ok.code, 0);
  t.same(progress, ["50 half of bookworm"]);
  t.same(lines.sort(), ["stderr: to stderr", "stdout: log line"], "every other line is log");

  writeFileSync(join(dir, "10-rootfs.sh"), "echo before the failure\nexit 3\n");
  const failed = await run();
  t.equal(failed.code, 3, "the exit status");
  t.same(failed.tail, ["before the failure"], "the last lines, for the error");
});
