import type { Hono } from "hono";
import { routePath } from "hono/route";
import type { EventBus } from "../../events/bus.js";
import type { BootfleetMetrics } from "../../metrics/bootfleet.js";
import { CONTENT_TYPE } from "../../metrics/registry.js";
import type { Store } from "../../store/index.js";
import type { ApiEnv } from "../env.js";

declare module "../route.js" {
  interface ApiServices {
    /** The product's Prometheus metrics; GET /metrics serves them. */
    metrics?: BootfleetMetrics;
  }
}

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

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
  app.get("/metrics", (c) =>
    c.body(metrics.expose(), 200, { "content-type": CONTENT_TYPE, "cache-control": "no-store" }),
  );
}

/**
 * Feeds the metrics that come from other services: finished jobs (from the bus's
 * job_progress events), events lost to slow subscribers, and the sessions in progress
 * (read from the store at scrape time). Returns the function that disconnects the bus.
 */
export function connectMetrics(opts: {
  metrics: BootfleetMetrics;
  bus: EventBus;
  store: Store;
}): () => void {
  const { metrics, bus, store } = opts;
  const off = bus.on((e) => {
    if (e.type === "job_progress" && FINAL.has(e.payload.status)) {
      metrics.jobFinished(e.payload.type, e.payload.status as "succeeded" | "failed" | "cancelled");
    }
  });
  metrics.onCollect((m) => m.eventsDropped(bus.stats().dropped));
  const sessions = () =>
    (
      store.db
        .prepare("SELECT count(*) AS n FROM boot_sessions WHERE status IN ('starting','active')")
        .get() as { n: number }
    ).n;
  metrics.registry.onCollect(() => metrics.activeSessions(sessions()));
  return off;
}
