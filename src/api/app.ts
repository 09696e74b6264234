import { Hono } from "hono";
import type { Logger } from "pino";
import { ApiError, errorBody } from "./errors.js";
import { type HealthDeps, healthRoutes } from "./health.js";
import { requestId } from "./request-id.js";

export type ApiEnv = { Variables: { requestId: string } };

export interface AppDeps extends HealthDeps {
  log: Logger;
}

/**
 * The daemon's HTTP application: the REST API under /api (and the boot scripts iPXE
 * fetches, added by netboot). Every response has a request id; every error has the
 * contract's body; no stack trace ever reaches a client.
 */
export function createApp(deps: AppDeps) {
  const app = new Hono<ApiEnv>();
  app.use("*", requestId());
  app.use("*", async (c, next) => {
    const started = performance.now();
    await next();
    deps.log.debug(
      {
        request_id: c.get("requestId"),
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        duration_ms: Math.round((performance.now() - started) * 10) / 10,
      },
      "request",
    );
  });
  app.route("/api/health", healthRoutes(deps));

  app.notFound((c) =>
    c.json(errorBody(c, "not_found", `no route for ${c.req.method} ${c.req.path}`), 404),
  );
  app.onError((err, c) => {
    if (err instanceof ApiError) {
      return c.json(errorBody(c, err.code, err.message, err.extra), err.status);
    }
    deps.log.error({ err, request_id: c.get("requestId"), path: c.req.path }, "request failed");
    return c.json(
      errorBody(
        c,
        "internal_server_error",
        "internal error; the request id is in the daemon's log",
      ),
      500,
    );
  });
  return app;
}
