import { existsSync, readdirSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Context, Hono } from "hono";
import { type Asset, loadAsset, sendAsset } from "./static-asset.js";

/**
 * The dashboard's Content-Security-Policy: scripts, styles and connections from this origin
 * only; no inline script or style, no eval, no framing. The bundle is built to need nothing
 * more (src/web: no style attributes, gauges are <meter>/<progress>, charts are SVG).
 */
const WEB_CSP_DIRECTIVES: Readonly<Record<string, string>> = {
  "default-src": "'self'",
  "script-src": "'self'",
  "style-src": "'self'",
  "img-src": "'self'",
  "font-src": "'self'",
  "connect-src": "'self'",
  "object-src": "'none'",
  "base-uri": "'none'",
  "form-action": "'self'",
  "frame-ancestors": "'none'",
};

/** The dashboard's policy with some directives replaced (another page of ours that needs more). */
export function cspLike(replaced: Readonly<Record<string, string>> = {}): string {
  return Object.entries({ ...WEB_CSP_DIRECTIVES, ...replaced })
    .map(([directive, sources]) => `${directive} ${sources}`)
    .join("; ");
}

export const WEB_CSP = cspLike();

/** dist/web beside dist/api (this file compiles to dist/api/web.js). */
export function defaultWebDir(): string {
  return fileURLToPath(new URL("../web/", import.meta.url));
}

const send = (c: Context, a: Asset, cacheControl: string) => sendAsset(c, a, cacheControl, WEB_CSP);

/** Every file of the built dashboard, read once: nothing a request names reaches the disk. */
function loadAll(dir: string): { index: Asset | undefined; assets: Map<string, Asset> } {
  const assets = new Map<string, Asset>();
  const assetDir = join(dir, "assets");
  if (existsSync(assetDir)) {
    for (const name of readdirSync(assetDir)) {
      if (extname(name) !== ".map") assets.set(name, loadAsset(join(assetDir, name)));
    }
  }
  const indexPath = join(dir, "index.html");
  return { index: existsSync(indexPath) ? loadAsset(indexPath) : undefined, assets };
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
