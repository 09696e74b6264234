import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import t from "tap";
import { addUser, call, tokenFor } from "../api/helpers.js";
import { servicesApi } from "../api/services-helpers.js";
import { tempDir } from "../helpers/daemon.js";

// Images built from recipes through the API, with the real job runner, the real step
// scripts of test/fixtures/recipes (sfdisk, mkfs.ext4, dd: a tiny disk in about a second)
// and qemu-img for the import. Needs no root.

const RECIPES = resolve(import.meta.dirname, "../fixtures/recipes");
/** Bounds, not expectations: a loaded CI machine is slow. */
const JOB_TIMEOUT = 120_000;

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

async function start(t: Parameters<typeof servicesApi>[0]) {
  const cacheDir = tempDir(t, `bf-build-cache-${process.pid}-`);
  const api = servicesApi(t, { builds: { recipesDir: RECIPES, cacheDir } });
  const admin = await tokenFor(api, await addUser(api, "b-admin", "admin"));
  return { api, admin, cacheDir };
}

type Api = Awaited<ReturnType<typeof start>>["api"];

async function buildAndWait(api: Api, token: string, body: Record<string, unknown>) {
  const r = await call(api, "POST", "/api/images/build", { token, body });
  if (r.status !== 202) return { r, job: undefined, image: undefined };
  const job = await api.services.jobs.wait(r.json.job_id, JOB_TIMEOUT);
  const image = (await call(api, "GET", `/api/images/${r.json.image_id}`, { token })).json;
  return { r, job, image };
}

const imageFiles = (api: Api) => readdirSync(api.imagesDir).filter((f) => f.startsWith("img-"));

t.test("a recipe builds into a ready image; the second build is a cache hit", async (t) => {
  const { api, admin, cacheDir } = await start(t);

  const list = await call(api, "GET", "/api/images/recipes", { token: admin });
  t.equal(list.status, 200);
  const tiny = list.json.recipes.find((r: { name: string }) => r.name === "tiny");
  t.same(
    { ...tiny, hash: undefined },
    {
      name: "tiny",
      description: "A test recipe: an 8 MiB GPT disk with one ext4 partition, in a second",
      steps: [
        { id: "disk", title: "Partition the disk" },
        { id: "fs", title: "Make the file system" },
      ],
      cached: false,
      hash: undefined,
    },
    "listed with its steps, not cached yet",
  );

  const first = await buildAndWait(api, admin, { recipe: "tiny", name: "Tiny 1" });
  t.equal(first.r.status, 202, JSON.stringify(first.r.json));
  t.equal(first.r.json.image.status, "processing", "the image exists at once, being built");
  t.same(
    first.r.json.job.steps.map((s: { name: string }) => s.name),
    ["disk", "fs", "copy", "inspect", "check", "convert", "finalize"],
    "the job's steps: the recipe's, then the copy and the upload's import",
  );
  t.equal(first.job?.status, "succeeded", first.job?.error ?? "");
  t.equal(first.image.status, "ready");
  t.equal(first.image.format, "raw");
  t.equal(first.image.virtual_size_bytes, 8 << 20);
  const files = imageFiles(api);
  t.equal(files.length, 1, "one file in images_dir");
  const path = join(api.imagesDir, files[0]!);
  t.equal(first.image.checksum_sha256, sha256(path), "the image's checksum is its file's");
  const cached = readdirSync(cacheDir).find((f) => /^tiny-[0-9a-f]{16}\.raw$/.test(f));
  t.ok(cached, `the build is cached: ${readdirSync(cacheDir).join(" ")}`);
  t.equal(sha256(join(cacheDir, cached!)), first.image.checksum_sha256, "and is the same disk");
  const versions = api.store.images.versions(first.image.id);
  t.match(versions[0]?.note, /^built from recipe tiny \([0-9a-f]{16}\)$/);
  const logs = api.store.jobs.logPage(first.r.json.job_id, 0, 1000).map((l) => l.message);
  t.ok(
    logs.some((l) => /^disk: partitioned .*\/disk\.raw$/.test(l)),
    "the step's output is in the job log, line by line",
  );
  t.ok(
    logs.some((l) => /^fs: mkfs/.test(l)),
    "its progress text too",
  );
  t.equal(readFileSync(join(cacheDir, "tiny.runs"), "utf8"), "run\n", "the scripts ran once");

  const listed = await call(api, "GET", "/api/images/recipes", { token: admin });
  t.equal(listed.json.recipes.find((r: { name: string }) => r.name === "tiny").cached, true);

  const second = await buildAndWait(api, admin, { recipe: "tiny", name: "Tiny 2" });
  t.equal(second.job?.status, "succeeded", second.job?.error ?? "");
  t.equal(second.image.status, "ready");
  t.equal(second.image.checksum_sha256, first.image.checksum_sha256, "the same disk");
  const steps = await call(api, "GET", `/api/jobs/${second.r.json.job_id}`, { token: admin });
  t.same(
    steps.json.steps
      .slice(0, 2)
      .map((s: { name: string; status: string; message?: string }) => [
        s.name,
        s.status,
        /^cached \(recipe [0-9a-f]{16}\)$/.test(s.message ?? ""),
      ]),
    [
      ["disk", "skipped", true],
      ["fs", "skipped", true],
    ],
    "the recipe's steps say cached",
  );
  t.equal(readFileSync(join(cacheDir, "tiny.runs"), "utf8"), "run\n", "no script ran again");
  t.equal(imageFiles(api).length, 2, "each image has its own file");
});

t.test("a failing step: the image is error naming it, nothing in images_dir", async (t) => {
  const { api, admin } = await start(t);
  const { r, job, image } = await buildAndWait(api, admin, { recipe: "failing", name: "Broken" });
  t.equal(r.status, 202);
  t.equal(job?.status, "failed");
  t.match(job?.error, /step boom \(20-boom\.sh\) failed \(exit 3\)/);
  t.equal(image.status, "error");
  t.match(
    image.status_reason,
    /^build failed: step boom \(20-boom\.sh\) failed \(exit 3\): the disk is not what this step expected/,
  );
  const steps = job ? JSON.parse(job.steps) : [];
  t.same(
    steps.map((s: { name: string; status: string }) => [s.name, s.status]),
    [
      ["disk", "succeeded"],
      ["boom", "failed"],
      ["copy", "skipped"],
      ["inspect", "skipped"],
      ["check", "skipped"],
      ["convert", "skipped"],
      ["finalize", "skipped"],
    ],
  );
  t.same(imageFiles(api), [], "no file in images_dir");
  t.equal(api.store.images.versions(image.id).length, 0, "no version registered");
});

t.test("cancel during a step ends its processes; the image is error", async (t) => {
  const { api, admin, cacheDir } = await start(t);
  const r = await call(api, "POST", "/api/images/build", {
    token: admin,
    body: { recipe: "slow", name: "Slow" },
  });
  t.equal(r.status, 202);
  const pidsFile = join(cacheDir, "slow.pids");
  // The step has started both processes once it wrote their pids (bounded wait).
  for (let i = 0; i < 600 && !existsSync(pidsFile); i++)
    await new Promise((r) => setTimeout(r, 100));
  const pids = readFileSync(pidsFile, "utf8").trim().split(" ").map(Number);
  t.equal(pids.length, 2);
  // Running: in /proc and not a zombie (an orphan waits there for init to reap it).
  const alive = (pid: number) => {
    try {
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      return false;
    }
  };
  t.ok(pids.every(alive), "the step's shell and its child run");
  const cancel = await call(api, "POST", `/api/jobs/${r.json.job_id}/cancel`, { token: admin });
  t.ok(cancel.status < 300, `cancel: ${cancel.status} ${JSON.stringify(cancel.json)}`);
  const job = await api.services.jobs.wait(r.json.job_id, JOB_TIMEOUT);
  t.equal(job.status, "cancelled");
  t.notOk(pids.some(alive), "the shell and its child are gone");
  const image = (await call(api, "GET", `/api/images/${r.json.image_id}`, { token: admin })).json;
  t.equal(image.status, "error");
  t.equal(image.status_reason, "build cancelled during step wait (10-wait.sh)");
  t.same(imageFiles(api), []);
  t.same(
    readdirSync(cacheDir).filter((f) => f.startsWith(".build-")),
    [],
    "the work folder is gone",
  );
});

t.test("only installed recipes, by a name that stays in recipes_dir", async (t) => {
  const { api, admin } = await start(t);
  const missing = await call(api, "POST", "/api/images/build", {
    token: admin,
    body: { recipe: "windows-11", name: "W" },
  });
  t.equal(missing.status, 404);
  t.match(missing.json.detail, /no recipe named "windows-11" is installed/);
  for (const recipe of ["../tiny", "tiny/../tiny", "..", "a/b", "/etc", "Tiny", ".hidden", ""]) {
    const r = await call(api, "POST", "/api/images/build", {
      token: admin,
      body: { recipe, name: "X" },
    });
    t.equal(r.status, 422, `${JSON.stringify(recipe)} refused`);
    t.equal(r.json.field, "recipe");
  }
  const noContent = await call(api, "POST", "/api/images/build", {
    token: admin,
    body: { recipe: "tiny", name: "X", steps: [{ script: "rm -rf /" }] },
  });
  t.equal(noContent.status, 422, "a recipe's content is never taken from a request");
  t.equal(noContent.json.field, "steps");
  t.equal(api.store.images.get(1), undefined, "no image was created");

  const taken = await buildAndWait(api, admin, { recipe: "tiny", name: "Same" });
  t.equal(taken.job?.status, "succeeded");
  const again = await call(api, "POST", "/api/images/build", {
    token: admin,
    body: { recipe: "tiny", name: "same" },
  });
  t.equal(again.status, 409, "a taken image name");

  for (const role of ["operator", "viewer"] as const) {
    const token = await tokenFor(api, await addUser(api, `b-${role}`, role));
    const r = await call(api, "POST", "/api/images/build", {
      token,
      body: { recipe: "tiny", name: `by ${role}` },
    });
    t.equal(r.status, 403, `${role} may not build`);
    t.equal(
      (await call(api, "GET", "/api/images/recipes", { token })).status,
      200,
      `${role} may list`,
    );
  }
});
