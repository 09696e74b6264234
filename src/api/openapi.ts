import { z } from "zod";
import { defineRoute, type RouteDef } from "./route.js";

function openApiPath(path: string): string {
  return `/api${path.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, "{$1}")}`;
}

function schemaOf(s: z.ZodType, io: "input" | "output" = "input"): Record<string, unknown> {
  try {
    const { $schema: _drop, ...rest } = z.toJSONSchema(s, { io, unrepresentable: "any" }) as Record<
      string,
      unknown
    >;
    return rest;
  } catch {
    return {};
  }
}

function paramList(s: z.ZodType | undefined, where: "path" | "query") {
  if (!s) return [];
  const js = schemaOf(s) as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(js.properties ?? {}).map(([name, schema]) => ({
    name,
    in: where,
    required: where === "path" || (js.required ?? []).includes(name),
    schema,
  }));
}

const ERROR_SCHEMA = {
  type: "object",
  required: ["error", "detail", "timestamp"],
  properties: {
    error: { type: "string" },
    detail: { type: "string" },
    timestamp: { type: "integer", description: "Unix seconds" },
    request_id: { type: "string" },
    field: { type: "string", description: "the field at fault (validation_error)" },
  },
};

/** The OpenAPI 3.1 document of the routes, generated from the registry. */
export function openApiDocument(routes: readonly RouteDef[], version: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    if (r.hidden) continue;
    const p = openApiPath(r.path);
    const errRef = {
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    };
    const responses: Record<string, unknown> = {
      [String(r.status ?? 200)]: { description: "success" },
      "422": { description: "validation_error", ...errRef },
      "429": { description: "rate_limit_exceeded", ...errRef },
    };
    if (r.roles !== "public") {
      responses["401"] = { description: "authentication_error", ...errRef };
      responses["403"] = { description: "authorization_error", ...errRef };
    }
    paths[p] ??= {};
    paths[p][r.method.toLowerCase()] = {
      summary: r.summary,
      tags: [r.tag],
      "x-roles": r.roles === "public" ? ["public"] : [...r.roles],
      ...(r.roles === "public" ? { security: [] } : {}),
      parameters: [...paramList(r.params, "path"), ...paramList(r.query, "query")],
      ...(r.body
        ? {
            requestBody: {
              required: true,
              content: { "application/json": { schema: schemaOf(r.body) } },
            },
          }
        : {}),
      responses,
    };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "bootfleet management API",
      version,
      description:
        "Compatible with the GGnet Diskless Server API. Log in at POST /api/auth/login and send the access token as `Authorization: Bearer <token>`. x-roles lists the roles that may call an operation.",
    },
    servers: [{ url: "/" }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
      schemas: { Error: ERROR_SCHEMA },
    },
    security: [{ bearer: [] }],
    paths,
  };
}

const esc = (s: string) => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

/**
 * /api/docs: the appliance has no internet, so no CDN viewer: a self-contained page,
 * rendered on the server, listing every route with its roles and schemas.
 */
export function docsHtml(routes: readonly RouteDef[], version: string): string {
  const byTag = new Map<string, RouteDef[]>();
  for (const r of routes) {
    if (r.hidden) continue;
    const list = byTag.get(r.tag) ?? [];
    list.push(r);
    byTag.set(r.tag, list);
  }
  const block = (title: string, s: z.ZodType | undefined) =>
    s
      ? `<details><summary>${title}</summary><pre>${esc(JSON.stringify(schemaOf(s), null, 2))}</pre></details>`
      : "";
  const sections = [...byTag.entries()]
    .map(
      ([tag, list]) =>
        `<section><h2 id="${esc(tag)}">${esc(tag)}</h2>${list
          .map(
            (r) =>
              `<article><h3><span class="m ${r.method}">${r.method}</span> <code>${esc(
                openApiPath(r.path),
              )}</code></h3><p>${esc(r.summary)}</p><p class="roles">roles: ${esc(
                r.roles === "public" ? "public (no token)" : r.roles.join(", "),
              )}</p>${block("path parameters", r.params)}${block("query parameters", r.query)}${block(
                "request body (JSON)",
                r.body,
              )}</article>`,
          )
          .join("")}</section>`,
    )
    .join("");
  const toc = [...byTag.keys()].map((t) => `<a href="#${esc(t)}">${esc(t)}</a>`).join(" · ");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bootfleet API ${esc(
    version,
  )}</title><meta name="viewport" content="width=device-width,initial-scale=1"><style>
body{font:15px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h3{font-size:1em;margin:.2em 0}article{border-top:1px solid #ddd;padding:.6em 0}
.m{display:inline-block;min-width:4.5em;font:bold 12px monospace;padding:2px 4px;border-radius:3px;color:#fff;background:#555}
.GET{background:#2a7}.POST{background:#27c}.PUT{background:#c80}.DELETE{background:#c33}.PATCH{background:#86c}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px}.roles{color:#666;font-size:13px;margin:0}
</style></head><body><h1>bootfleet management API <small>${esc(version)}</small></h1>
<p>Base path <code>/api</code>. Log in with <code>POST /api/auth/login</code> and send <code>Authorization: Bearer &lt;access_token&gt;</code>.
Errors are <code>{"error","detail","timestamp"}</code>. The machine-readable document is <a href="/api/openapi.json">/api/openapi.json</a>.</p>
<nav>${toc}</nav>${sections}</body></html>`;
}

/** GET /api/openapi.json and GET /api/docs, both readable without a token. */
export function docsRoutes(routes: () => readonly RouteDef[], version: string): RouteDef[] {
  return [
    defineRoute({
      method: "GET",
      path: "/openapi.json",
      tag: "docs",
      summary: "OpenAPI 3.1 document of this API",
      roles: "public",
      handler: ({ c }) => c.json(openApiDocument(routes(), version)),
    }),
    defineRoute({
      method: "GET",
      path: "/docs",
      tag: "docs",
      summary: "Interactive documentation (self-contained page)",
      roles: "public",
      handler: ({ c }) => c.html(docsHtml(routes(), version)),
    }),
  ];
}
