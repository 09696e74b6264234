import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Context } from "hono";
import { type Asset, assetOf, loadAsset, sendAsset } from "./static-asset.js";
import { cspLike } from "./web.js";

/**
 * /api/docs: Swagger UI from the swagger-ui-dist package (the appliance has no internet,
 * so no CDN), reading /api/openapi.json. Its page has no inline script: the initializer is
 * a file of its own.
 *
 * The policy is the dashboard's with one addition: swagger-ui.css draws some icons (the
 * arrows of select boxes, the copy-to-clipboard button, the model toggles) as `data:` SVG
 * images, so img-src takes `data:` (an image, never a script). That is scoped to /api/docs;
 * the page needs nothing more (React sets its style properties through the CSSOM, which
 * style-src does not govern), and the browser test (test/browser/api-docs.test.ts) fails on
 * any violation.
 */
export const DOCS_CSP = cspLike({ "img-src": "'self' data:" });

/**
 * Started by the page. validatorUrl null: Swagger UI would otherwise ask
 * validator.swagger.io to validate the document (offline here, and refused by connect-src).
 * The token entered in "Authorize" lives in this page only (not persisted), so another
 * site cannot use it and closing the tab forgets it.
 */
export const DOCS_INIT_JS = `"use strict";
window.ui = window.SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [window.SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  persistAuthorization: false,
  displayRequestDuration: true,
  docExpansion: "list",
});
`;

/** The files under /api/docs/: the two from the package and the initializer. */
export const DOCS_FILES = ["swagger-ui-bundle.js", "swagger-ui.css", "init.js"] as const;
export type DocsFile = (typeof DOCS_FILES)[number];

const esc = (s: string) => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

export function docsPageHtml(version: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>bootfleet API ${esc(version)}</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
<main id="swagger-ui"></main>
<noscript><p>This page needs JavaScript. The API's OpenAPI document is at
<a href="/api/openapi.json">/api/openapi.json</a>.</p></noscript>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
`;
}

/** Where swagger-ui-dist is installed, or undefined (then /api/docs says so). */
function swaggerDir(): string | undefined {
  try {
    // The package has no "exports": its main file locates it.
    const dir = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist"));
    return existsSync(join(dir, "swagger-ui-bundle.js")) ? dir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Serves the docs page and its files. The package's files are read and compressed on the
 * first request (1.7 MB of JavaScript, ~0.4 MB gzipped), not at every daemon start.
 */
export class DocsUi {
  private readonly assets = new Map<string, Asset>();
  private page: Asset | undefined;

  constructor(private readonly version: string) {}

  pageResponse(c: Context): Response {
    this.page ??= assetOf("index.html", Buffer.from(docsPageHtml(this.version)));
    return sendAsset(c, this.page, "no-cache", DOCS_CSP);
  }

  fileResponse(c: Context, name: DocsFile): Response {
    let a = this.assets.get(name);
    if (!a) {
      if (name === "init.js") a = assetOf(name, Buffer.from(DOCS_INIT_JS));
      else {
        const dir = swaggerDir();
        if (!dir) {
          return c.text("swagger-ui-dist is not installed: /api/openapi.json has the API.\n", 503);
        }
        a = loadAsset(join(dir, name));
      }
      this.assets.set(name, a);
    }
    // Revalidated (etag) rather than cached for a year: the names carry no version.
    return sendAsset(c, a, "no-cache", DOCS_CSP);
  }
}
