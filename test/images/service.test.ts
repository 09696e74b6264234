import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { EventBus } from "../../src/events/bus.js";
import { ImageError } from "../../src/images/errors.js";
import { ImageService } from "../../src/images/service.js";
import { JobRunner, parseSteps } from "../../src/jobs/runner.js";
import { silent, tempStore } from "../jobs/helpers.js";
import { multipart } from "./multipart.js";

function setup(t: Parameters<typeof tempStore>[0], maxUploadBytes = 256 << 20) {
  const { store, dir, beforeClose } = tempStore(t, "images");
  const imagesDir = join(dir, "images");
  execFileSync("mkdir", ["-p", imagesDir]);
  const bus = new EventBus();
  const runner = new JobRunner({ store, bus, log: silent });
  beforeClose(() => runner.stop(10_000));
  const images = new ImageService({ store, runner, bus, log: silent, imagesDir, maxUploadBytes });
  return { store, bus, runner, images, imagesDir, work: dir };
}

/** A raw disk with distinct content in every MiB, and one made from it by qemu-img. */
function makeDisk(work: string, mib: number) {
  const raw = join(work, "src.raw");
  const b = Buffer.alloc(mib << 20);
  for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE(i ^ 0x5a5a5a5a, i);
  writeFileSync(raw, b);
  return raw;
}

function sha256(path: string, length?: number): string {
  const data = readFileSync(path);
  return createHash("sha256")
    .update(length === undefined ? data : data.subarray(0, length))
    .digest("hex");
}

async function uploadFile(images: ImageService, path: string, name: string, filename: string) {
  const { headers, body } = multipart([
    { name: "file", filename, value: readFileSync(path) },
    { name: "name", value: name },
    { name: "image_type", value: "system" },
  ]);
  return images.upload({ headers, body, userId: null });
}

for (const [fmt, ours] of [
  ["qcow2", "qcow2"],
  ["vpc", "vhd"],
  ["vhdx", "vhdx"],
  ["vmdk", "vmdk"],
  ["vdi", "vdi"],
] as const) {
  t.test(
    `a ${ours} upload is converted to raw in a job and ends ready with the same disk content`,
    async (t) => {
      const { images, imagesDir, work, store, bus, runner } = setup(t);
      const raw = makeDisk(work, 8);
      const img = join(work, `disk.${fmt}`);
      execFileSync("qemu-img", ["convert", "-f", "raw", "-O", fmt, raw, img]);
      const seen: string[] = [];
      bus.on((e) => seen.push(e.type));
      const { image, job } = await uploadFile(images, img, `disk-${ours}`, `disk.${ours}`);
      t.equal(image.status, "processing");
      t.equal(image.size_bytes, statSync(img).size);
      t.equal(image.checksum_sha256, sha256(img), "the checksum is of the uploaded file");
      t.ok(seen.includes("image_uploaded"));
      const done = await runner.wait(job.id, 60_000);
      t.equal(done.status, "succeeded", done.error ?? "");
      const row = store.images.get(image.id)!;
      t.equal(row.status, "ready");
      t.equal(row.format, ours, "format detected by qemu-img info");
      t.ok(row.virtual_size_bytes >= 8 << 20);
      const path = images.currentPath(image.id)!;
      t.ok(path.startsWith(`${imagesDir}/img-`) && path.endsWith(".raw"));
      t.equal(statSync(path).size, row.virtual_size_bytes);
      // VHD rounds the disk up to a CHS geometry: compare the original length.
      t.equal(sha256(path, 8 << 20), sha256(raw), "the raw copy holds the original disk");
      t.same(
        readdirSync(imagesDir),
        [path.slice(imagesDir.length + 1)],
        "only the raw file remains",
      );
      t.same(
        parseSteps(done.steps).map((s) => [s.name, s.status]),
        [
          ["inspect", "succeeded"],
          ["check", "succeeded"],
          ["convert", "succeeded"],
          ["finalize", "succeeded"],
        ],
      );
      t.equal(store.images.versions(image.id).length, 1);
    },
  );
}

t.test(
  "conversion progress from qemu-img -p reaches the job between its first and last percent",
  async (t) => {
    const { images, work, bus, runner } = setup(t);
    const raw = makeDisk(work, 96);
    const img = join(work, "big.qcow2");
    execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, img]);
    const progress: number[] = [];
    bus.on((e) => {
      if (e.type === "job_progress" && e.payload.step === "convert")
        progress.push(e.payload.progress);
    });
    const { job } = await uploadFile(images, img, "big", "big.qcow2");
    await runner.wait(job.id, 120_000);
    const middle = progress.filter((p) => p > 11 && p < 94);
    t.ok(middle.length >= 3, `convert progress seen: ${progress.join(", ")}`);
    t.same(
      [...progress].sort((a, b) => a - b),
      progress,
      "progress only rises",
    );
  },
);

t.test("a raw upload needs no conversion and keeps its checksum as the version's", async (t) => {
  const { images, work, store, runner } = setup(t);
  const raw = makeDisk(work, 2);
  const { image, job } = await uploadFile(images, raw, "plain", "plain.img");
  const done = await runner.wait(job.id, 30_000);
  t.equal(done.status, "succeeded");
  const steps = parseSteps(done.steps);
  t.equal(steps.find((s) => s.name === "convert")?.status, "skipped");
  t.equal(store.images.get(image.id)?.format, "raw");
  t.equal(store.images.versions(image.id)[0]?.checksum_sha256, sha256(raw));
  t.equal(sha256(images.currentPath(image.id)!), sha256(raw));
});

t.test("a truncated qcow2 ends error with the reason, and nothing is left on disk", async (t) => {
  const { images, imagesDir, work, store, runner } = setup(t);
  const raw = makeDisk(work, 4);
  const img = join(work, "broken.qcow2");
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, img]);
  truncateSync(img, 300 * 1024);
  const { image, job } = await uploadFile(images, img, "broken", "broken.qcow2");
  const done = await runner.wait(job.id, 30_000);
  t.equal(done.status, "failed");
  const row = store.images.get(image.id)!;
  t.equal(row.status, "error");
  t.match(row.status_reason, /corrupt/);
  t.equal(parseSteps(done.steps).find((s) => s.name === "check")?.status, "failed");
  t.same(readdirSync(imagesDir), []);
});

t.test(
  "an image that names a backing file is refused: it would read files of the server",
  async (t) => {
    const { images, work, store, runner } = setup(t);
    const img = join(work, "evil.qcow2");
    execFileSync("qemu-img", ["create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", img]);
    const { image, job } = await uploadFile(images, img, "evil", "evil.qcow2");
    await runner.wait(job.id, 30_000);
    const row = store.images.get(image.id)!;
    t.equal(row.status, "error");
    t.match(row.status_reason, /backing file/);
    t.equal(store.images.versions(image.id).length, 0);
  },
);

t.test("a file without a known disk header is taken as raw, as qemu-img and qemu do", async (t) => {
  // qemu-img takes any bytes without a known header as raw: the product accepts them as
  // a raw disk, as qemu would boot them. This pins that behaviour down.
  const { images, work, store, runner } = setup(t);
  const f = join(work, "notes.txt");
  writeFileSync(f, "hello\n".repeat(1000));
  const { image, job } = await uploadFile(images, f, "notes", "notes.txt");
  await runner.wait(job.id, 30_000);
  t.equal(store.images.get(image.id)?.format, "raw");
});

t.test(
  "bad form fields are invalid_upload naming the field; a duplicate name is name_taken; neither leaves a row or a file",
  async (t) => {
    const { images, imagesDir, work, store } = setup(t);
    const raw = makeDisk(work, 1);
    const noName = multipart([{ name: "file", filename: "a.raw", value: readFileSync(raw) }]);
    const e1 = await images.upload({ ...noName, userId: null }).catch((e) => e);
    t.type(e1, ImageError);
    t.equal(e1.code, "invalid_upload");
    t.equal(e1.details.field, "name");
    const badType = multipart([
      { name: "name", value: "x" },
      { name: "image_type", value: "weird" },
      { name: "file", filename: "a.raw", value: readFileSync(raw) },
    ]);
    const e2 = await images.upload({ ...badType, userId: null }).catch((e) => e);
    t.equal(e2.code, "invalid_upload");
    t.equal(e2.details.field, "image_type");
    t.equal(store.images.count(), 0);
    t.same(readdirSync(imagesDir), []);

    await uploadFile(images, raw, "Taken", "a.raw");
    const before = readdirSync(imagesDir).length;
    const e3 = await uploadFile(images, raw, "taken", "b.raw").catch((e) => e);
    t.equal(e3.code, "name_taken", "names are unique without regard to case");
    t.equal(store.images.count(), 1);
    t.ok(readdirSync(imagesDir).length <= before);
  },
);

t.test(
  "delete is refused while a target uses the image, then removes the row and its file",
  async (t) => {
    const { images, imagesDir, work, store, runner } = setup(t);
    const raw = makeDisk(work, 1);
    const { image, job } = await uploadFile(images, raw, "used", "u.raw");
    await runner.wait(job.id, 30_000);
    const m = store.machines.create({ name: "pc1", mac_address: "52:54:00:00:00:01" });
    const target = store.targets.create({
      name: "pc1-t",
      iqn: "iqn.2025-01.test:pc1",
      portal_ip: "10.0.0.1",
      machine_id: m.id,
      system_image_id: image.id,
      initiator_iqn: "iqn.2025-01.test:init-pc1",
      chap_username: "u",
      chap_password: "p".repeat(12),
    });
    const err = await images.delete(image.id).catch((e) => e);
    t.equal(err.code, "in_use");
    t.ok(store.images.get(image.id), "still there");
    store.targets.delete(target.id);
    await images.delete(image.id);
    t.equal(store.images.get(image.id), undefined);
    t.same(readdirSync(imagesDir), []);
    const e404 = await images.delete(image.id).catch((e) => e);
    t.equal(e404.code, "not_found");
  },
);

t.test("update changes metadata and refuses a name another image has", async (t) => {
  const { images, work, runner } = setup(t);
  const raw = makeDisk(work, 1);
  const a = await uploadFile(images, raw, "a", "a.raw");
  const b = await uploadFile(images, raw, "b", "b.raw");
  await runner.wait(a.job.id, 30_000);
  await runner.wait(b.job.id, 30_000);
  const u = images.update(a.image.id, { description: "new", image_type: "game" });
  t.equal(u.description, "new");
  t.equal(u.image_type, "game");
  t.equal(
    (() => {
      try {
        images.update(a.image.id, { name: "B" });
      } catch (e) {
        return (e as ImageError).code;
      }
    })(),
    "name_taken",
  );
  t.equal(
    images.update(a.image.id, { name: "A" }).name,
    "A",
    "renaming to itself in another case is fine",
  );
});
