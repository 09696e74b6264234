import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { adminToken, type RunningDaemon, startDaemon, tempDir } from "../helpers/daemon.js";

// Images copied into the drop folder (<images_dir>/import) are imported by the real daemon
// through the upload's job: only once complete, once across restarts, refused when junk,
// and a ready image whose file is removed turns `error`.

const STABLE_MS = 1500;
const hasQemuImg = (() => {
  try {
    execFileSync("qemu-img", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

interface ImageRow {
  id: number;
  name: string;
  status: string;
  status_reason: string | null;
  format: string;
  checksum_sha256: string | null;
  virtual_size_bytes: number;
}

function api(d: RunningDaemon, auth: string) {
  return async <T>(path: string): Promise<T> => {
    const r = await fetch(`http://127.0.0.1:${d.port}/api${path}`, {
      headers: { authorization: `Bearer ${auth}` },
      signal: AbortSignal.timeout(10_000),
    });
    if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  };
}

/** Polls until `pick` returns something, at most `bound` ms (a bound, not an assertion). */
async function until<T>(
  what: string,
  pick: () => Promise<T | undefined>,
  bound = 120_000,
): Promise<T> {
  const deadline = Date.now() + bound;
  for (;;) {
    const got = await pick();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await sleep(200);
  }
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

t.test(
  "the drop folder imports complete files once, refuses junk, and guards ready files",
  {
    skip: hasQemuImg ? false : "qemu-img is not installed",
  },
  async (t) => {
    const dir = tempDir(t, `bf-drop-${process.pid}-`);
    const env = {
      BOOTFLEET_DATA_DIR: dir,
      BOOTFLEET_TFTP_ENABLED: "false",
      BOOTFLEET_IMAGES_IMPORT_STABLE_MS: String(STABLE_MS),
    };
    const images = join(dir, "images");
    const drop = join(images, "import");
    let d = await startDaemon(t, { env });
    let auth = await adminToken(d, dir);
    let get = api(d, auth);
    const all = () => get<ImageRow[]>("/images?limit=100");
    const named = async (name: string) => (await all()).filter((i) => i.name === name);
    const settled = (name: string) =>
      until(`image ${name} to settle`, async () => {
        const [img] = await named(name);
        return img && (img.status === "ready" || img.status === "error") ? img : undefined;
      });
    t.ok(existsSync(drop), "the daemon made the drop folder");

    await t.test("a file written slowly is imported once, after its last chunk", async (t) => {
      const chunks = [randomBytes(512 * 1024), randomBytes(512 * 1024), randomBytes(1024 * 1024)];
      const fh = await open(join(drop, "slow.raw"), "wx");
      for (const [i, chunk] of chunks.entries()) {
        await fh.write(chunk);
        // Longer than the stability window: only the open writer says the copy goes on.
        await sleep(STABLE_MS * 2.5);
        if (i < chunks.length - 1) {
          t.same(await named("slow"), [], `no image after chunk ${i + 1} of ${chunks.length}`);
        }
      }
      await fh.close();
      const img = await settled("slow");
      t.equal(img.status, "ready", img.status_reason ?? "");
      t.equal(img.checksum_sha256, sha256(Buffer.concat(chunks)), "checksum of the whole file");
      t.equal(img.virtual_size_bytes, 2 * 1024 * 1024);
      t.equal((await named("slow")).length, 1, "one image");
      t.notOk(existsSync(join(drop, "slow.raw")), "the file left the drop folder");
    });

    await t.test("a qcow2 is converted", async (t) => {
      const work = tempDir(t, `bf-drop-src-${process.pid}-`);
      const raw = randomBytes(3 * 1024 * 1024);
      writeFileSync(join(work, "disk.raw"), raw);
      execFileSync("qemu-img", [
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        join(work, "disk.raw"),
        join(work, "win 11.qcow2"),
      ]);
      copyFileSync(join(work, "win 11.qcow2"), join(drop, "win 11.qcow2"));
      const img = await settled("win 11");
      t.equal(img.status, "ready", img.status_reason ?? "");
      t.equal(img.format, "qcow2");
      t.equal(img.virtual_size_bytes, raw.length);
      const rawFiles = readdirSync(images).filter((f) => f.endsWith(".raw"));
      t.ok(
        rawFiles.some((f) => sha256(readFileSync(join(images, f))) === sha256(raw)),
        "the library holds the disk's raw bytes",
      );
    });

    await t.test(
      "junk is an error with the reason, kept in failed/, and the daemon serves on",
      async (t) => {
        writeFileSync(join(drop, "junk.qcow2"), "this is not a disk image\n".repeat(100));
        const img = await settled("junk");
        t.equal(img.status, "error");
        t.match(img.status_reason, /named \.qcow2 but qemu-img reads it as raw/);
        await until("junk in failed/", async () =>
          existsSync(join(drop, "failed", "junk.qcow2")) ? true : undefined,
        );
        const health = await fetch(`http://127.0.0.1:${d.port}/api/health`);
        t.equal(health.status, 200, "still serving");
      },
    );

    await t.test("a clash of names gets a suffix", async (t) => {
      writeFileSync(join(drop, "slow.img"), randomBytes(1024 * 1024));
      const img = await settled("slow (2)");
      t.equal(img.status, "ready", img.status_reason ?? "");
    });

    await t.test("removing a ready image's file makes it an error, with an alert", async (t) => {
      const [slow] = await named("slow");
      const file = readdirSync(images)
        .filter((f) => f.endsWith(".raw"))
        .find((f) => sha256(readFileSync(join(images, f))) === slow!.checksum_sha256);
      t.ok(file, "found the image's file");
      unlinkSync(join(images, file!));
      const img = await until("slow to turn error", async () => {
        const [i] = await named("slow");
        return i?.status === "error" ? i : undefined;
      });
      t.match(img.status_reason, /was removed from the image folder/);
      const alerts = await get<{ message: string; severity: string }[]>("/alerts?active=true");
      t.ok(
        alerts.some((a) => a.severity === "critical" && a.message.includes("slow")),
        "a critical alert names the image",
      );
    });

    await t.test("a file dropped while the daemon is down is imported once", async (t) => {
      d.proc.kill("SIGTERM");
      await d.exited;
      const before = readdirSync(images).filter((f) => f.endsWith(".raw")).length;
      writeFileSync(join(drop, "offline.raw"), randomBytes(1024 * 1024));
      d = await startDaemon(t, { env });
      auth = await adminToken(d, dir);
      get = api(d, auth);
      const img = await settled("offline");
      t.equal(img.status, "ready", img.status_reason ?? "");
      const count = (await all()).length;
      d.proc.kill("SIGTERM");
      await d.exited;
      d = await startDaemon(t, { env });
      auth = await adminToken(d, dir);
      get = api(d, auth);
      // A file is moved out of the drop folder as it is taken: nothing is left to take again.
      t.notOk(existsSync(join(drop, "offline.raw")), "the drop folder no longer holds it");
      t.equal((await all()).length, count, "the restart imported nothing again");
      t.equal((await named("offline")).length, 1);
      t.equal(readdirSync(images).filter((f) => f.endsWith(".raw")).length, before + 1);
      const [slow] = await named("slow");
      t.equal(slow!.status, "error", "the lost file stays an error");
      d.proc.kill("SIGTERM");
      await d.exited;
    });

    await t.test("a drop import the daemon died in gives the file back", async (t) => {
      // What a killed process leaves: the job running, the file moved in under our name.
      const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 1000 });
      const bytes = randomBytes(64 * 1024);
      const source = "img-00000000-0000-4000-8000-0000000000aa.upload";
      writeFileSync(join(images, source), bytes);
      const image = store.images.create({
        name: "crashed",
        filename: "crashed.raw",
        status: "processing",
      });
      const job = store.jobs.create("image_import", {
        image_id: image.id,
        source,
        dropped: "crashed.raw",
      });
      store.jobs.update(job.id, { status: "running" });
      // And a ready image's file removed while the daemon was down.
      const listed = store.images.listRows({ skip: 0, limit: 100, sort: "id", order: "asc" });
      const offlineId = listed.rows.find((i) => i.name === "offline")?.id;
      const offlinePath = store.images.currentFiles().find((f) => f.image_id === offlineId)?.path;
      store.close();
      t.ok(offlinePath, "found the offline image's file");
      unlinkSync(offlinePath!);
      d = await startDaemon(t, { env });
      get = api(d, await adminToken(d, dir));
      const [offline] = await named("offline");
      t.equal(offline!.status, "error", "a file removed while down is found at start");
      t.match(offline!.status_reason, /was removed from the image folder/);
      const [img] = await named("crashed");
      t.equal(img!.status, "error");
      t.match(img!.status_reason, /the file is back in .*failed\/crashed\.raw/);
      const back = join(drop, "failed", "crashed.raw");
      t.ok(existsSync(back) && sha256(readFileSync(back)) === sha256(bytes), "the file, whole");
      t.notOk(existsSync(join(images, source)), "nothing left under our name");
      d.proc.kill("SIGTERM");
      await d.exited;
    });
  },
);
