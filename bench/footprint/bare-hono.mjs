// The smallest server bench/footprint/run.ts measures bootfleetd against: a Hono app on
// @hono/node-server, started the way the daemon is (`node <one .js file>`, no TypeScript
// loader), answering /api/health and a list-shaped /api/machines.
//
//   BARE_PORT=8080 node bench/footprint/bare-hono.mjs
//
// It listens on 127.0.0.1 and exits on SIGTERM.

import { serve } from "@hono/node-server";
import { Hono } from "hono";

const app = new Hono();
app.get("/api/health", (c) => c.json({ status: "healthy" }));
app.get("/api/machines", (c) => c.json([]));

serve({ fetch: app.fetch, hostname: "127.0.0.1", port: Number(process.env.BARE_PORT ?? 0) });
process.once("SIGTERM", () => process.exit(0));
