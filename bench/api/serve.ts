// The servers run.ts measures, each in its own process so that each has one event loop of
// its own, like the daemon:
//
//   node --import tsx bench/api/serve.ts api DATA_DIR
//     bootfleet's API (createApi) on the data folder of a daemon, with the rate limits
//     raised (the daemon has no setting for them), the metrics and event services the
//     daemon wires in, served by the daemon's own startHttpServer.
//   node --import tsx bench/api/serve.ts bare RESPONSES_JSON
//     a bare Hono app on @hono/node-server's serve(): the same paths, answering with bytes
//     fetched from bootfleet beforehand ({ "/api/machines": {body, type}, "/boot/<mac>": ... }).
//
// Both listen on 127.0.0.1, an ephemeral port, and print {"port": N} on stdout once bound.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { createApi } from "../../src/api/app.js";
import { INITIAL_PASSWORD_FILE } from "../../src/api/auth/initial-admin.js";
import { loadOrCreateSigningKey } from "../../src/api/auth/keys.js";
import type { ApiServices } from "../../src/api/route.js";
import { startHttpServer } from "../../src/daemon/http-server.js";
import { createLogger } from "../../src/daemon/logger.js";
import { EventBus } from "../../src/events/bus.js";
import { EventStreams } from "../../src/events/streams.js";
import { BootfleetMetrics } from "../../src/metrics/bootfleet.js";
import { connectMetrics } from "../../src/metrics/connect.js";
import { Store } from "../../src/store/index.js";
import { VERSION } from "../../src/version.js";

export interface CannedResponse {
  /** base64 of the body bytes. */
  body: string;
  type: string;
}

const [mode, arg] = process.argv.slice(2);

// High enough that 10 s of 32 connections never meet them; each class is still counted,
// so the limiter's own cost stays in the measurement.
const UNLIMITED = { limit: 1_000_000_000, windowSeconds: 60 };

async function serveApi(dataDir: string) {
  const log = createLogger({ level: "warn", pretty: false, destination: process.stderr });
  const store = Store.open({ path: join(dataDir, "bootfleet.db"), busyTimeoutMs: 5000 });
  const bus = new EventBus();
  const metrics = new BootfleetMetrics();
  connectMetrics({ metrics, bus, store });
  const services: ApiServices = { metrics, events: new EventStreams({ bus }) };
  const { app } = createApi({
    log,
    version: VERSION,
    state: () => "ready",
    store,
    signingKey: loadOrCreateSigningKey(join(dataDir, "api-signing.key")),
    rateLimits: { general: UNLIMITED, auth: UNLIMITED, upload: UNLIMITED },
    services,
    initialPasswordFile: join(dataDir, INITIAL_PASSWORD_FILE),
  });
  const http = await startHttpServer({ fetch: app.fetch, listen: "127.0.0.1:0", log });
  return http.address.port;
}

function serveBare(file: string): Promise<number> {
  const canned = JSON.parse(readFileSync(file, "utf8")) as Record<string, CannedResponse>;
  const bytes = new Map(
    Object.entries(canned).map(([k, v]) => [
      k,
      { body: Buffer.from(v.body, "base64"), type: v.type },
    ]),
  );
  const app = new Hono();
  const answer = (key: string) => {
    const r = bytes.get(key);
    return r
      ? new Response(r.body, { headers: { "content-type": r.type } })
      : new Response("not found\n", { status: 404 });
  };
  app.get("/api/machines", () => answer("/api/machines"));
  app.get("/boot/:mac/:token", (c) => answer(`/boot/${c.req.param("mac")}`));
  return new Promise((resolve) => {
    serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => resolve(info.port));
  });
}

const port =
  mode === "api" && arg
    ? await serveApi(arg)
    : mode === "bare" && arg
      ? await serveBare(arg)
      : (() => {
          process.stderr.write("usage: serve.ts api DATA_DIR | bare RESPONSES_JSON\n");
          process.exit(2);
        })();
process.stdout.write(`${JSON.stringify({ port })}\n`);
// An orderly exit on SIGTERM, so that --cpu-prof (run.ts --profile) writes its profile.
process.once("SIGTERM", () => process.exit(0));
