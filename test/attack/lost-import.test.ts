import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { adminToken, startDaemon, tempDir } from "../helpers/daemon.js";

// Before: a daemon killed mid-import left its image `processing` for ever, and the partial
// upload file stayed until an admin ran the cleanup job by hand.

t.test("a daemon killed mid-upload and mid-import leaves nothing stuck or behind", async (t) => {
  const dir = tempDir(t, `bf-lost-import-${process.pid}-`);
  const env = { BOOTFLEET_DATA_DIR: dir, BOOTFLEET_TFTP_ENABLED: "false" };
  const first = await startDaemon(t, { env });
  const auth = await adminToken(first, dir);
  const images = join(dir, "images");

  // An upload in progress: the head of a multipart body, then a stall.
  const boundary = "----bflost";
  const req = request({
    host: "127.0.0.1",
    port: first.port,
    path: "/api/images/upload",
    method: "POST",
    headers: {
      authorization: `Bearer ${auth}`,
      "content-type": `multipart/form-data; boundary=${boundary}`,
    },
  });
  req.on("error", () => {});
  req.write(
    `--${boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nhalf\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="half.raw"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  req.write(Buffer.alloc(256 * 1024, 9));
  const partial = () => readdirSync(images).filter((f) => f.startsWith(".upload-"));
  for (let i = 0; partial().length === 0; i++) {
    if (i > 200) throw new Error("the upload's temp file never appeared");
    await new Promise((r) => setTimeout(r, 100));
  }
  first.proc.kill("SIGKILL");
  await first.exited;
  req.destroy();
  t.equal(partial().length, 1, "the killed upload left its partial file");

  // And an import the killed process was running: its image row says processing.
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 1000 });
  const source = join(images, "img-00000000-0000-4000-8000-000000000001.upload");
  writeFileSync(source, Buffer.alloc(4096));
  const image = store.images.create({
    name: "mid-import",
    filename: "x.vhdx",
    status: "processing",
  });
  store.close();

  const second = await startDaemon(t, { env });
  const auth2 = await adminToken(second, dir);
  const got = await fetch(`http://127.0.0.1:${second.port}/api/images/${image.id}`, {
    headers: { authorization: `Bearer ${auth2}` },
  });
  const body = (await got.json()) as { status: string; status_reason: string };
  t.equal(body.status, "error", "the interrupted import is an error, not processing");
  t.match(body.status_reason, "the daemon stopped during import; upload again");
  await second.waitForLog((l) => l.msg === "partial upload removed" && l.path === source, 30_000);
  t.same(partial(), [], "the partial upload is removed");
  t.notOk(existsSync(source), "and the dead import's source");
  second.proc.kill("SIGTERM");
  await second.exited;
});
