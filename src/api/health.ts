import { Hono } from "hono";
import type { ApiEnv } from "./app.js";

export type DaemonState = "starting" | "ready" | "stopping";

export interface HealthDeps {
  version: string;
  state: () => DaemonState;
}

/** GET /api/health in the GGnet shape: 200 "healthy" once ready, 503 before and while stopping. */
export function healthRoutes(deps: HealthDeps) {
  const app = new Hono<ApiEnv>();
  app.get("/", (c) => {
    const state = deps.state();
    const body = {
      status: state === "ready" ? "healthy" : state,
      timestamp: new Date().toISOString(),
      service: "bootfleet",
      version: deps.version,
    };
    return c.json(body, state === "ready" ? 200 : 503);
  });
  return app;
}
