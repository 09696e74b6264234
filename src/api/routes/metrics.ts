import type { Hono } from "hono";
import { routePath } from "hono/route";
import type { BootfleetMetrics } from "../../metrics/bootfleet.js";
import { CONTENT_TYPE } from "../../metrics/registry.js";
import type { ApiEnv } from "../types.js";

declare module "../route.js" {
  interface ApiServices {
    /** The product's Prometheus metrics; GET /metrics serves them. */
    metrics?: BootfleetMetrics;
  }
}

/**
 * Counts every /api request by method, route pattern (never the raw path: ids and names
 * would make unbounded series) and status, and serves GET /metrics.
 *
 * /metrics is outside /api and needs no token, as Prometheus scrapes expect: it holds
 * counts and durations by architecture, phase, route and status only, never a MAC, an
 * IQN, an address, a name or a secret (the registry refuses such label values). Limit who
 * reaches it on the network, as with any exporter.
 */
export function installMetrics(app: Hono<ApiEnv>, metrics: BootfleetMetrics | undefined): void {
  if (!metrics) return;
  app.use("/api/*", async (c, next) => {
    const started = performance.now();
    try {
      await next();
    } finally {
      const pattern = routePath(c, -1);
      // Only this middleware matched: no route has the path.
      const route = pattern.endsWith("*") ? "unmatched" : pattern;
      metrics.apiRequest(c.req.method, route, c.res.status, (performance.now() - started) / 1000);
    }
  });
  app.get("/metrics", async (c) =>
    c.body(await metrics.expose(), 200, {
      "content-type": CONTENT_TYPE,
      "cache-control": "no-store",
    }),
  );
}
