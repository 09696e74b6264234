import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import t from "tap";
import { addUser, call, seedJsonAfter, tokenFor } from "./helpers.js";
import { servicesApi } from "./services-helpers.js";

const run = promisify(execFile);
const seed = readFileSync(new URL("./fixtures/ggnet-api.md", import.meta.url), "utf8");

/** A raw disk with distinct content in every 4 KiB block, and a qcow2 made from it. */
function disks(dir: string, mib: number) {
  const raw = join(dir, "disk.raw");
  const b = Buffer.alloc(mib << 20);
  for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(raw, b);
  const qcow2 = join(dir, "disk.qcow2");
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, qcow2]);
  return { raw, qcow2 };
}

const digest = (alg: string, path: string) =>
  createHash(alg).update(readFileSync(path)).digest("hex");

t.test(
  "images: the seed's requests (curl upload, list, get, update, delete) with their fields and codes",
  async (t) => {
    const api = servicesApi(t);
    const { base } = await api.listen();
    const admin = await addUser(api, "img-admin", "admin");
    const token = await tokenFor(api, admin);
    const viewer = await tokenFor(api, await addUser(api, "img-viewer", "viewer"));
    const { raw, qcow2 } = disks(api.dir, 4);

    // The seed's curl example, as written there (host and file aside).
    const { stdout } = await run("curl", [
      "-sS",
      "-X",
      "POST",
      `${base}/api/images/upload`,
      "-H",
      `Authorization: Bearer ${token}`,
      "-F",
      `file=@${raw}`,
      "-F",
      "name=Windows 11",
      "-F",
      "image_type=system",
      "-w",
      "\n%{http_code}",
    ]);
    const [bodyText, code] = stdout.split(/\n(?=\d{3}$)/);
    t.equal(code, "201", "curl upload answered 201");
    const up = JSON.parse(bodyText!);
    t.equal(up.name, "Windows 11");
    t.equal(up.image_type, "system");
    t.equal(up.filename, "disk.raw", "the client's file name is kept for display");
    t.equal(up.size_bytes, 4 << 20);
    t.equal(up.checksum_md5, digest("md5", raw));
    t.equal(up.checksum_sha256, digest("sha256", raw));
    t.equal(up.created_by_username, "img-admin");
    t.ok(Number.isInteger(up.job_id), "the import job is named");
    t.equal((await api.services.jobs.wait(up.job_id, 60_000)).status, "succeeded");

    // A qcow2 with a description, as a browser's FormData sends it.
    const form = new FormData();
    form.set("file", new Blob([readFileSync(qcow2)]), "games.qcow2");
    form.set("name", "Games Disk");
    form.set("description", "Steam library");
    form.set("image_type", "game");
    const res = await fetch(`${base}/api/images/upload`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: form,
    });
    t.equal(res.status, 201);
    t.equal(
      res.headers.get("location"),
      `/api/images/${((await res.clone().json()) as { id: number }).id}`,
    );
    const games = (await res.json()) as { id: number; job_id: number; status: string };
    t.equal(games.status, "processing", "ready only once its import job has run");
    const job = await api.services.jobs.wait(games.job_id, 60_000);
    t.equal(job.status, "succeeded", job.error ?? "");

    const got = await call(api, "GET", `/api/images/${games.id}`, { token: viewer });
    t.equal(got.status, 200);
    t.equal(got.json.status, "ready");
    t.equal(got.json.format, "qcow2", "format detected by qemu-img");
    t.equal(got.json.virtual_size_bytes, 4 << 20);
    t.equal(got.json.description, "Steam library");
    t.equal(got.json.current_version, 1);

    // The list in the seed's shape: every field of its example, with the same types.
    const [example] = seedJsonAfter(seed, "#### GET /images") as [Record<string, unknown>[]];
    const list = await call(api, "GET", "/api/images", { token: viewer });
    t.equal(list.status, 200);
    t.equal(list.headers.get("x-total-count"), "2");
    t.equal(list.json.length, 2);
    for (const [k, v] of Object.entries(example![0]!)) {
      t.ok(k in list.json[0], `list item has the seed's field ${k}`);
      t.equal(typeof list.json[0][k], typeof v, `${k} has the seed's type`);
    }
    const ready = await call(api, "GET", "/api/images?status=ready&image_type=game", {
      token: viewer,
    });
    t.same(
      ready.json.map((i: { name: string }) => i.name),
      ["Games Disk"],
    );
    const searched = await call(
      api,
      "GET",
      "/api/images?search=windows&sort=created_at&order=desc&limit=50",
      {
        token: viewer,
      },
    );
    t.same(
      searched.json.map((i: { name: string }) => i.name),
      ["Windows 11"],
      "the seed's filtering example",
    );
    const byName = await call(api, "GET", "/api/images?sort=name&order=desc", { token: viewer });
    t.same(
      byName.json.map((i: { name: string }) => i.name),
      ["Windows 11", "Games Disk"],
    );
    t.equal(
      (await call(api, "GET", "/api/images?status=broken", { token: viewer })).json.field,
      "status",
    );

    // PUT with the seed's body.
    const [putBody] = seedJsonAfter(seed, "#### PUT /images/{id}") as [Record<string, unknown>];
    const put = await call(api, "PUT", `/api/images/${up.id}`, { token, body: putBody });
    t.equal(put.status, 200);
    t.equal(put.json.name, putBody!.name);
    t.equal(put.json.description, putBody!.description);
    const clash = await call(api, "PUT", `/api/images/${up.id}`, {
      token,
      body: { name: "games disk" },
    });
    t.equal(clash.status, 409, "names are unique regardless of case");
    t.equal(clash.json.error, "conflict_error");
    t.equal(
      (await call(api, "PUT", `/api/images/${up.id}`, { token: viewer, body: { name: "x" } }))
        .status,
      403,
    );

    // DELETE: refused while a target uses the image, then it and its file go.
    const m = await call(api, "POST", "/api/machines", {
      token,
      body: { name: "pc-1", mac_address: "52:54:00:12:34:56" },
    });
    const target = await call(api, "POST", "/api/targets", {
      token,
      body: { machine_id: m.json.id, system_image_id: up.id },
    });
    t.equal(target.status, 201);
    const busy = await call(api, "DELETE", `/api/images/${up.id}`, { token });
    t.equal(busy.status, 409);
    t.equal(busy.json.error, "conflict_error");
    t.match(busy.json.detail, /used by 1 target/);
    const file = api.services.images.currentPath(up.id)!;
    t.ok(readdirSync(api.imagesDir).includes(file.split("/").pop()!), "the file is still there");
    t.equal((await call(api, "DELETE", `/api/targets/${target.json.id}`, { token })).status, 200);
    const del = await call(api, "DELETE", `/api/images/${up.id}`, { token });
    t.equal(del.status, 200);
    t.notOk(readdirSync(api.imagesDir).includes(file.split("/").pop()!), "its file is gone");
    t.equal((await call(api, "GET", `/api/images/${up.id}`, { token })).status, 404);
    t.equal((await call(api, "DELETE", `/api/images/${up.id}`, { token })).status, 404);
    const history = api.store.db
      .prepare(
        "SELECT operation, status FROM history_events WHERE resource_type = 'image' ORDER BY id",
      )
      .all() as { operation: string; status: string }[];
    t.same(
      history.map((h) => `${h.operation}:${h.status}`),
      [
        "upload:success",
        "upload:success",
        "update:success",
        "update:failure",
        "update:failure",
        "delete:failure",
        "delete:success",
        "delete:failure",
      ],
      "every change is in history",
    );
  },
);

t.test("an upload cut off halfway leaves no row and no file", async (t) => {
  const api = servicesApi(t);
  const { base } = await api.listen();
  const token = await tokenFor(api, await addUser(api, "cut-admin", "admin"));
  const port = Number(new URL(base).port);
  const boundary = `----bfcut${process.pid}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\ncut\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.raw"\r\n` +
      "Content-Type: application/octet-stream\r\n\r\n",
  );
  const fileBytes = 8 << 20;
  const total = head.length + fileBytes + `\r\n--${boundary}--\r\n`.length;
  const sock = connect(port, "127.0.0.1");
  await new Promise<void>((r) => sock.once("connect", () => r()));
  sock.write(
    `POST /api/images/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
      `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${total}\r\n\r\n`,
  );
  sock.write(head);
  // Half the file, then the client goes away.
  const half = Buffer.alloc(fileBytes / 2, 0x5a);
  await new Promise<void>((r) => sock.write(half, () => r()));
  // The temp file exists while the upload runs: the test sees the moment it is cut.
  const deadline = Date.now() + 10_000;
  while (!readdirSync(api.imagesDir).some((f) => f.startsWith(".upload-"))) {
    if (Date.now() > deadline) throw new Error("the upload never reached the disk");
    await new Promise((r) => setTimeout(r, 20));
  }
  sock.destroy();
  const end = Date.now() + 10_000;
  while (readdirSync(api.imagesDir).length > 0 || api.store.images.count() > 0) {
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  t.same(readdirSync(api.imagesDir), [], "no file left in the image folder");
  t.equal(api.store.images.count(), 0, "no image row");
  t.equal(api.store.jobs.count(), 0, "no import job");
});

t.test("a failed upload answers with Connection: close and the reason", async (t) => {
  const api = servicesApi(t, { maxUploadBytes: 1 << 20 });
  const { base } = await api.listen();
  const token = await tokenFor(api, await addUser(api, "big-admin", "admin"));
  // curl, because it reads an answer that comes before the body is sent (fetch does not).
  const bigFile = join(api.dir, "big.raw");
  writeFileSync(bigFile, Buffer.alloc(3 << 20, 1));
  const { stdout } = await run("curl", [
    "-sS",
    "-D",
    "-",
    "-H",
    `Authorization: Bearer ${token}`,
    "-F",
    `file=@${bigFile}`,
    "-F",
    "name=too big",
    `${base}/api/images/upload`,
  ]);
  const blocks = stdout.split("\r\n\r\n");
  // Node answers curl's "Expect: 100-continue" before the route runs.
  while (blocks[0]?.startsWith("HTTP/1.1 100")) blocks.shift();
  const [head, text] = blocks;
  t.match(head, /^HTTP\/1\.1 413 /);
  t.match(head, /^connection: close$/im);
  const body = JSON.parse(text!) as { error: string; max_bytes: number };
  t.equal(body.error, "payload_too_large");
  t.equal(body.max_bytes, 1 << 20);
  const noName = new FormData();
  noName.set("file", new Blob([Buffer.alloc(1024, 2)]), "small.raw");
  const r2 = await fetch(`${base}/api/images/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: noName,
  });
  t.equal(r2.status, 422);
  t.equal(r2.headers.get("connection"), "close");
  t.equal(((await r2.json()) as { field: string }).field, "name");
  t.same(readdirSync(api.imagesDir), [], "nothing of either upload is left");
  t.equal(api.store.images.count(), 0);
});

t.test("uploads are rate limited as the seed says: 3 per minute", async (t) => {
  const api = servicesApi(t, { rateLimits: { upload: { limit: 3, windowSeconds: 60 } } });
  const token = await tokenFor(api, await addUser(api, "rl-admin", "admin"));
  const codes: number[] = [];
  let last: Response | undefined;
  for (let i = 0; i < 4; i++) {
    const form = new FormData();
    form.set("file", new Blob([Buffer.alloc(512, i)]), "x.raw");
    last = await api.app.request("/api/images/upload", {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: form,
    });
    codes.push(last.status);
  }
  t.same(codes, [422, 422, 422, 429], "three (failing) uploads counted, the fourth refused");
  t.equal(last!.headers.get("x-ratelimit-limit"), "3");
  t.equal(last!.headers.get("x-ratelimit-window"), "60");
  t.ok(Number(last!.headers.get("retry-after")) > 0);
  // Reads are not upload requests.
  t.equal((await call(api, "GET", "/api/images", { token })).status, 200);
});
