import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { type Context, Hono } from "hono";

/**
 * The dashboard's Content-Security-Policy: scripts, styles and connections from this origin
 * only; no inline script or style, no eval, no framing. The bundle is built to need nothing
 * more (src/web: no style attributes, gauges are <meter>/<progress>, charts are SVG).
 */
export const WEB_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".json": "application/json",
};

interface Asset {
  body: Uint8Array<ArrayBuffer>;
  gzip: Uint8Array<ArrayBuffer> | undefined;
  type: string;
  etag: string;
}

/** dist/web beside dist/api (this file compiles to dist/api/web.js). */
export function defaultWebDir(): string {
  return fileURLToPath(new URL("../web/", import.meta.url));
}

function load(path: string): Asset {
  const body = new Uint8Array(readFileSync(path));
  const zipped = gzipSync(body, { level: 9 });
  return {
    body,
    // Compression only where it pays (SVG icons of a few hundred bytes do not).
    gzip: zipped.length < body.length * 0.9 ? new Uint8Array(zipped) : undefined,
    type: TYPES[extname(path)] ?? "application/octet-stream",
    etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
  };
}

/** Every file of the built dashboard, read once: nothing a request names reaches the disk. */
function loadAll(dir: string): { index: Asset | undefined; assets: Map<string, Asset> } {
  const assets = new Map<string, Asset>();
  const assetDir = join(dir, "assets");
  if (existsSync(assetDir)) {
    for (const name of readdirSync(assetDir)) {
      if (extname(name) !== ".map") assets.set(name, load(join(assetDir, name)));
    }
  }
  const indexPath = join(dir, "index.html");
  return { index: existsSync(indexPath) ? load(indexPath) : undefined, assets };
}

function send(c: Context, a: Asset, cacheControl: string): Response {
  const headers: Record<string, string> = {
    "content-type": a.type,
    "cache-control": cacheControl,
    etag: a.etag,
    vary: "accept-encoding",
    "content-security-policy": WEB_CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
  };
  if (c.req.header("if-none-match") === a.etag) return c.body(null, 304, headers);
  if (a.gzip && /\bgzip\b/.test(c.req.header("accept-encoding") ?? "")) {
    headers["content-encoding"] = "gzip";
    return c.body(a.gzip, 200, headers);
  }
  return c.body(a.body, 200, headers);
}

/**
 * The web dashboard at `/`: index.html (revalidated on every load, so a new daemon's
 * bundle is picked up) and /assets/<name>-<hash>.<ext> (cached for a year: a new build
 * has new names). Mounted by the daemon beside /api and /boot.
 */
export function webRoutes(dir: string = defaultWebDir()): Hono {
  const { index, assets } = loadAll(dir);
  const app = new Hono();
  app.get("/", (c) => {
    if (!index) {
      return c.text(
        "The web dashboard is not built: run `npm run build`. The API is at /api.\n",
        503,
      );
    }
    return send(c, index, "no-cache");
  });
  app.get("/assets/:name", (c) => {
    const a = assets.get(c.req.param("name"));
    if (!a) return c.text("not found\n", 404, { "x-content-type-options": "nosniff" });
    return send(c, a, "public, max-age=31536000, immutable");
  });
  return app;
}
