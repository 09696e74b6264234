import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import t from "tap";
import { WEB_CSP, webRoutes } from "../../src/api/web.js";
import { tempDir } from "../helpers/daemon.js";

/** The dashboard's static handler on its own, over a built tree made by the test. */
t.test("web handler: types, caching, compression, CSP, nothing outside the build", async (t) => {
  const dir = tempDir(t, `bf-web-serve-${process.pid}-`);
  mkdirSync(join(dir, "assets"));
  const js = `console.log(${JSON.stringify("x".repeat(4000))});`;
  writeFileSync(
    join(dir, "index.html"),
    '<!doctype html><script src="/assets/app-ABC.js"></script>',
  );
  writeFileSync(join(dir, "assets/app-ABC.js"), js);
  writeFileSync(join(dir, "assets/app-ABC.js.map"), "{}");
  writeFileSync(join(dir, "secret.txt"), "not served");
  const app = webRoutes(dir);

  const index = await app.request("/");
  t.equal(index.status, 200);
  t.equal(index.headers.get("content-type"), "text/html; charset=utf-8");
  t.equal(index.headers.get("content-security-policy"), WEB_CSP);
  t.equal(index.headers.get("cache-control"), "no-cache");
  t.equal(index.headers.get("x-frame-options"), "DENY");
  const etag = index.headers.get("etag")!;
  t.match(etag, /^"[A-Za-z0-9_-]{22}"$/);
  const head = await app.request("/", { method: "HEAD" });
  t.equal(head.status, 200, "HEAD answers like GET");
  t.equal(head.headers.get("etag"), etag);
  const again = await app.request("/", { headers: { "if-none-match": etag } });
  t.equal(again.status, 304, "revalidation answers 304");
  t.equal(await again.text(), "");

  const plain = await app.request("/assets/app-ABC.js");
  t.equal(plain.headers.get("content-type"), "text/javascript; charset=utf-8");
  t.equal(plain.headers.get("cache-control"), "public, max-age=31536000, immutable");
  t.equal(plain.headers.get("content-encoding"), null, "not compressed unless asked");
  t.equal(await plain.text(), js);
  const zipped = await app.request("/assets/app-ABC.js", {
    headers: { "accept-encoding": "gzip, deflate, br" },
  });
  t.equal(zipped.headers.get("content-encoding"), "gzip");
  t.equal(zipped.headers.get("vary"), "accept-encoding");
  t.equal(gunzipSync(Buffer.from(await zipped.arrayBuffer())).toString(), js, "same bytes");

  for (const path of [
    "/assets/app-ABC.js.map",
    "/assets/nope.js",
    "/assets/..%2fsecret.txt",
    "/assets/../secret.txt",
    "/secret.txt",
    "/index.html",
  ]) {
    t.equal((await app.request(path)).status, 404, `${path}: 404`);
  }
});

t.test("web handler: an unbuilt dashboard says how to build it", async (t) => {
  const app = webRoutes(tempDir(t, `bf-web-empty-${process.pid}-`));
  const res = await app.request("/");
  t.equal(res.status, 503);
  t.match(await res.text(), /npm run build/);
});
