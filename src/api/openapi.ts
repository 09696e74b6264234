import * as z from "zod";
import { DOCS_FILES, DocsUi } from "./docs-ui.js";
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

/**
 * GET /api/openapi.json, GET /api/docs (Swagger UI) and its files, all readable without a
 * token.
 */
export function docsRoutes(routes: () => readonly RouteDef[], version: string): RouteDef[] {
  const ui = new DocsUi(version);
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
      summary: "Interactive documentation (Swagger UI, served offline)",
      roles: "public",
      handler: ({ c }) => ui.pageResponse(c),
    }),
    defineRoute({
      method: "GET",
      path: "/docs/:file",
      tag: "docs",
      summary: "A file of the documentation page",
      roles: "public",
      hidden: true,
      params: z.object({ file: z.enum(DOCS_FILES) }),
      handler: ({ c, params }) => ui.fileResponse(c, params.file),
    }),
  ];
}
