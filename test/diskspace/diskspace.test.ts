import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import {
  findOrphans,
  registerCleanupJob,
  STORAGE_CLEANUP_JOB,
} from "../../src/diskspace/cleanup.js";
import { storageHealth, storageInfo, usageOf } from "../../src/diskspace/usage.js";
import { JobRunner } from "../../src/jobs/runner.js";
import { smallTmpfs } from "../images/tmpfs.js";
import { silent, tempStore } from "../jobs/helpers.js";

const isRoot = process.getuid?.() === 0;
const needsRoot = isRoot ? false : "needs root: mounts a tmpfs of known size";

/** df's own figures for a folder, in bytes. */
function df(path: string) {
  const out = execFileSync("df", ["-B1", "--output=size,used,avail,pcent", path]).toString();
  const [size, used, avail, pcent] = out.trim().split("\n")[1]!.trim().split(/\s+/);
  return {
    size: Number(size),
    used: Number(used),
    avail: Number(avail),
    pcent: Number.parseInt(pcent!, 10),
  };
}

t.test(
  "usage matches df(1) on a 64 MiB tmpfs, in the GGnet shape",
  { skip: needsRoot },
  async (t) => {
    const dir = smallTmpfs(t, 64 << 20, "storage-usage");
    writeFileSync(join(dir, "fill"), Buffer.alloc(16 << 20, 1));
    const u = await usageOf(dir);
    const d = df(dir);
    t.equal(u.total_bytes, 64 << 20);
    t.equal(u.total_bytes, d.size);
    t.equal(u.used_bytes, d.used);
    t.equal(u.free_bytes, d.avail);
    t.equal(u.total_gb, 0.06);
    t.equal(Math.ceil(u.usage_percent), d.pcent, "df rounds Use% up");
    t.equal(u.usage_percent, 25);
    const info = await storageInfo({ imagesDir: dir });
    t.same(Object.keys(info).sort(), ["images_storage", "system_storage", "upload_storage"]);
    t.same(Object.keys(info.images_storage).sort(), [
      "free_bytes",
      "free_gb",
      "path",
      "total_bytes",
      "total_gb",
      "usage_percent",
      "used_bytes",
      "used_gb",
    ]);
    t.equal(info.system_storage.path, "/");
    t.equal(info.upload_storage.path, dir);
  },
);

t.test(
  "health: healthy, then warning and critical as a folder fills; missing folders are critical",
  { skip: needsRoot },
  async (t) => {
    const dir = smallTmpfs(t, 10 << 20, "storage-health");
    const missing = join(dir, "nope");
    let h = await storageHealth([dir]);
    t.equal(h.status, "healthy");
    t.equal(h.directories[dir]?.writable, true);
    writeFileSync(join(dir, "a"), Buffer.alloc(9 << 20, 1));
    h = await storageHealth([dir]);
    t.equal(h.status, "warning", `${h.directories[dir]?.usage_percent}% full`);
    writeFileSync(join(dir, "b"), Buffer.alloc((1 << 20) - 4096, 1));
    h = await storageHealth([dir]);
    t.equal(h.status, "critical");
    h = await storageHealth([missing]);
    t.equal(h.status, "critical");
    t.equal(h.directories[missing]?.exists, false);
  },
);

function tempDirs(t: { teardown(fn: () => void): void }) {
  const base = mkdtempSync(join(tmpdir(), `bf-storage-${process.pid}-`));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const images = join(base, "images");
  const overlays = join(base, "overlays");
  mkdirSync(images);
  mkdirSync(overlays);
  return { images, overlays };
}

const old = (p: string) => {
  const when = new Date(Date.now() - 3 * 3600_000);
  utimesSync(p, when, when);
  return p;
};

t.test(
  "orphans: only our unreferenced, old files; dry run lists, the real run removes exactly them",
  async (t) => {
    const { images, overlays } = tempDirs(t);
    const uuid = (n: number) => `0000000${n}-0000-4000-8000-000000000000`;
    const f = (dir: string, name: string, bytes = 10) => {
      const p = join(dir, name);
      writeFileSync(p, Buffer.alloc(bytes));
      return p;
    };
    const used = old(f(images, `img-${uuid(1)}.raw`));
    const orphanRaw = old(f(images, `img-${uuid(2)}.raw`, 100));
    const deadUpload = old(f(images, ".upload-abcdef0123.part", 50));
    const freshUpload = f(images, ".upload-00ff.part");
    const adminFile = old(f(images, "windows.vhdx"));
    const usedOverlay = old(f(overlays, "pc1.img"));
    const orphanOverlay = old(f(overlays, "pc2.img", 30));
    const deadTemp = old(f(overlays, ".pc3.tmp-0a0b0c", 7));
    const scan = {
      imagesDir: images,
      overlaysDir: overlays,
      referencedImageFiles: () => new Set([used]),
      referencedOverlayIds: () => new Set(["pc1"]),
    };
    const orphans = await findOrphans(scan);
    t.same(
      orphans.map((o) => [o.path, o.reason, o.bytes]),
      [
        [deadUpload, "dead upload", 50],
        [orphanRaw, "unreferenced image file", 100],
        [deadTemp, "dead overlay temp", 7],
      ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
      "an overlay no target references is never an orphan (the iSCSI side quarantines it)",
    );

    const { store } = tempStore(t, "storage");
    const runner = new JobRunner({ store, log: silent });
    registerCleanupJob(runner, scan);
    const dry = await runner.wait(runner.submit(STORAGE_CLEANUP_JOB, { dry_run: true }).id, 5000);
    const dryResult = JSON.parse(dry.result!);
    t.equal(dryResult.files.length, 3);
    t.equal(dryResult.bytes, 157);
    t.equal(dryResult.removed, 0);
    for (const p of [orphanRaw, deadUpload, deadTemp]) t.ok(existsSync(p), "dry run kept it");

    const real = await runner.wait(runner.submit(STORAGE_CLEANUP_JOB, { dry_run: false }).id, 5000);
    t.equal(real.status, "succeeded");
    t.equal(JSON.parse(real.result!).removed, 3);
    for (const p of [orphanRaw, deadUpload, deadTemp]) t.notOk(existsSync(p), `${p} removed`);
    for (const p of [used, freshUpload, adminFile, usedOverlay, orphanOverlay])
      t.ok(existsSync(p), `${p} kept`);
    t.ok(
      store.jobs.logs(real.id).some((l) => l.message.includes(orphanRaw)),
      "each removal is logged",
    );

    const dflt = await runner.wait(runner.submit(STORAGE_CLEANUP_JOB, {}).id, 5000);
    t.equal(JSON.parse(dflt.result!).dry_run, true, "without dry_run=false nothing is deleted");
  },
);
