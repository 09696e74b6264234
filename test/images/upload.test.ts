import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { ImageError } from "../../src/images/errors.js";
import { receiveUpload, safeDisplayName, UploadAborted } from "../../src/images/upload.js";
import { multipart, pattern } from "./multipart.js";
import { smallTmpfs } from "./tmpfs.js";

const isRoot = process.getuid?.() === 0;

function tempDir(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), `bf-images-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function bytesOf(gen: () => AsyncIterable<Buffer>) {
  const md5 = createHash("md5");
  const sha = createHash("sha256");
  for await (const c of gen()) {
    md5.update(c);
    sha.update(c);
  }
  return { md5: md5.digest("hex"), sha256: sha.digest("hex") };
}

t.test(
  "a file is streamed to a temp file in the folder, with the checksums the coreutils compute",
  async (t) => {
    const dir = tempDir(t);
    const size = 3 * 1024 * 1024 + 17;
    const { headers, body } = multipart([
      { name: "file", filename: "win11pro.vhdx", value: pattern(size) },
      { name: "name", value: "Windows 11" },
      { name: "image_type", value: "system" },
    ]);
    const got = await receiveUpload({ headers, body, dir, maxBytes: 10 << 20 });
    t.equal(got.bytes, size);
    t.equal(got.clientFilename, "win11pro.vhdx");
    t.same(
      got.fields,
      { name: "Windows 11", image_type: "system" },
      "fields after the file are read too",
    );
    t.equal(join(dir, got.tempPath.slice(dir.length + 1)), got.tempPath);
    t.equal(execFileSync("md5sum", [got.tempPath]).toString().split(" ")[0], got.md5);
    t.equal(execFileSync("sha256sum", [got.tempPath]).toString().split(" ")[0], got.sha256);
    t.same(await bytesOf(pattern(size)), { md5: got.md5, sha256: got.sha256 });
  },
);

t.test("hostile client file names never become paths", async (t) => {
  const dir = tempDir(t);
  for (const evil of [
    "../../etc/passwd",
    "..\\..\\boot.ini",
    "a\u0000b.img",
    "..",
    "/abs/x.qcow2",
  ]) {
    const { headers, body } = multipart([{ name: "file", filename: evil, value: "x".repeat(100) }]);
    const got = await receiveUpload({ headers, body, dir, maxBytes: 1000 }).catch((e) => e);
    if (got instanceof ImageError) {
      // busboy refuses a NUL in a header outright: refused is as good as sanitised.
      t.equal(got.code, "invalid_upload", `${JSON.stringify(evil)} refused as malformed`);
      continue;
    }
    t.ok(
      got.tempPath.startsWith(`${dir}/.upload-`),
      `${JSON.stringify(evil)} stored under our name`,
    );
    t.notMatch(got.clientFilename, /[/\\]/);
    t.notOk(got.clientFilename.includes("\0"));
    t.not(got.clientFilename, "..");
    rmSync(got.tempPath);
  }
  t.equal(safeDisplayName("../../etc/passwd"), "passwd");
  t.equal(safeDisplayName("a\u0000b.img"), "ab.img");
  t.equal(safeDisplayName(".."), "upload");
  t.same(readdirSync(dir), []);
});

t.test("one byte over the limit is refused as too_large and leaves no file", async (t) => {
  const dir = tempDir(t);
  const { headers, body } = multipart([
    { name: "file", filename: "big.raw", value: pattern(2 << 20) },
  ]);
  const err = await receiveUpload({ headers, body, dir, maxBytes: (2 << 20) - 1 }).catch((e) => e);
  t.type(err, ImageError);
  t.equal(err.code, "too_large");
  t.equal(err.details.max_bytes, (2 << 20) - 1);
  t.same(readdirSync(dir), []);
  const exact = multipart([{ name: "file", filename: "ok.raw", value: pattern(2 << 20) }]);
  const ok = await receiveUpload({ ...exact, dir, maxBytes: 2 << 20 });
  t.equal(ok.bytes, 2 << 20, "exactly the limit is accepted");
});

t.test("a client that disconnects halfway leaves no file", async (t) => {
  const dir = tempDir(t);
  const { headers, body } = multipart(
    [{ name: "file", filename: "half.qcow2", value: pattern(8 << 20) }],
    { failAfterBytes: 3 << 20 },
  );
  const err = await receiveUpload({ headers, body, dir, maxBytes: 100 << 20 }).catch((e) => e);
  t.type(err, UploadAborted);
  t.same(readdirSync(dir), []);
});

t.test("a body that ends before the closing boundary is not taken as complete", async (t) => {
  const dir = tempDir(t);
  const { headers } = multipart([]);
  const boundary = headers["content-type"].split("boundary=")[1]!;
  const { Readable } = await import("node:stream");
  const body = Readable.from([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n`,
    ),
    Buffer.alloc(50_000, 1),
  ]);
  const err = await receiveUpload({ headers, body, dir, maxBytes: 1 << 20 }).catch((e) => e);
  t.ok(
    err instanceof UploadAborted || (err instanceof ImageError && err.code === "invalid_upload"),
    String(err),
  );
  t.same(readdirSync(dir), []);
});

t.test("a form without the file field is invalid_upload naming the field", async (t) => {
  const dir = tempDir(t);
  const { headers, body } = multipart([{ name: "name", value: "x" }]);
  const err = await receiveUpload({ headers, body, dir, maxBytes: 1000 }).catch((e) => e);
  t.equal(err.code, "invalid_upload");
  t.equal(err.details.field, "file");
});

t.test(
  "a full disk is storage_full and leaves no file",
  { skip: isRoot ? false : "needs root: mounts an 8 MiB tmpfs" },
  async (t) => {
    const dir = smallTmpfs(t, 8 << 20, "upload-enospc");
    const { headers, body } = multipart([
      { name: "file", filename: "x.raw", value: pattern(16 << 20) },
    ]);
    const err = await receiveUpload({ headers, body, dir, maxBytes: 64 << 20 }).catch((e) => e);
    t.type(err, ImageError);
    t.equal(err.code, "storage_full");
    t.same(readdirSync(dir), []);
  },
);

t.test("memory does not grow with the upload: 512 MiB through a process's RSS", async (t) => {
  const dir = tempDir(t);
  const total = 512 << 20;
  global.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const { headers, body } = multipart([
    { name: "file", filename: "big.raw", value: pattern(total) },
  ]);
  const got = await receiveUpload({ headers, body, dir, maxBytes: total });
  clearInterval(timer);
  rmSync(got.tempPath);
  const grewMiB = (peak - before) / (1 << 20);
  t.equal(got.bytes, total);
  t.ok(grewMiB < 96, `RSS grew by ${grewMiB.toFixed(1)} MiB for a 512 MiB upload`);
});
