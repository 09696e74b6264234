import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApi } from "../../src/api/app.js";
import { TokenService } from "../../src/api/auth/tokens.js";
import type { ApiServices, RateLimits } from "../../src/api/route.js";
import { type RunningHttpServer, startHttpServer } from "../../src/daemon/http-server.js";
import { registerCleanupJob } from "../../src/diskspace/cleanup.js";
import { EventBus } from "../../src/events/bus.js";
import { EventStreams } from "../../src/events/streams.js";
import { ImageBuildService } from "../../src/images/build.js";
import { RecipeCatalog } from "../../src/images/recipes/catalog.js";
import { ImageService } from "../../src/images/service.js";
import { JobRunner } from "../../src/jobs/runner.js";
import { BootfleetMetrics } from "../../src/metrics/bootfleet.js";
import { connectMetrics } from "../../src/metrics/connect.js";
import { IpmiPower } from "../../src/power/ipmi.js";
import { PowerService } from "../../src/power/service.js";
import { Store } from "../../src/store/index.js";
import { HIGH_LIMITS, memoryLogger, type TestApi } from "./helpers.js";

export interface ServicesApi extends TestApi {
  services: Required<Pick<ApiServices, "images" | "jobs" | "events" | "metrics" | "power">>;
  bus: EventBus;
  imagesDir: string;
  /** MACs the recorded Wake-on-LAN sender was asked to wake. */
  woken: string[];
  /** ipmitool calls the recorded runner saw (no BMC is ever contacted). */
  ipmiCalls: string[][];
  /** The app on a real loopback HTTP server (streams and WebSocket need one). */
  listen(): Promise<{ base: string; server: RunningHttpServer }>;
}

export interface ServicesOptions {
  maxUploadBytes?: number;
  rateLimits?: Partial<RateLimits>;
  heartbeatMs?: number;
  maxQueue?: number;
  /** Image builds from these recipes, cached there (test/images/build.test.ts). */
  builds?: { recipesDir: string; cacheDir: string };
}

/**
 * An app with the real services (event bus and streams, job runner, images, storage
 * cleanup, metrics) on a fresh database in a temp folder; power has a recorded
 * Wake-on-LAN sender and a recorded ipmitool. One teardown ends everything in the
 * daemon's order: streams, HTTP, jobs, then the store.
 */
export function servicesApi(
  t: { teardown: (fn: () => void | Promise<void>) => void },
  opts: ServicesOptions = {},
): ServicesApi {
  const dir = mkdtempSync(join(tmpdir(), `bf-apisvc-${process.pid}-`));
  const imagesDir = join(dir, "images");
  mkdirSync(imagesDir);
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  const { log, lines } = memoryLogger();
  const key = new Uint8Array(32).map((_, i) => (i * 41 + 7) & 0xff);
  const bus = new EventBus();
  const metrics = new BootfleetMetrics();
  connectMetrics({ metrics, bus, store });
  const jobs = new JobRunner({ store, log, bus });
  const images = new ImageService({
    store,
    runner: jobs,
    log,
    bus,
    imagesDir,
    maxUploadBytes: opts.maxUploadBytes ?? 64 << 20,
  });
  registerCleanupJob(jobs, {
    imagesDir,
    referencedImageFiles: () => images.referencedFiles(),
    minAgeMs: 0,
  });
  const events = new EventStreams({
    bus,
    heartbeatMs: opts.heartbeatMs ?? 15_000,
    maxQueue: opts.maxQueue ?? 256,
  });
  const woken: string[] = [];
  const ipmiCalls: string[][] = [];
  const power = new PowerService({
    ipmi: new IpmiPower({
      run: async (cmd, args) => {
        ipmiCalls.push([cmd, ...args]);
        return { stdout: "Chassis Power is on\n", stderr: "" };
      },
    }),
    wake: async (mac) => {
      woken.push(mac);
    },
  });
  const builds = opts.builds
    ? new ImageBuildService({
        store,
        runner: jobs,
        images,
        catalog: new RecipeCatalog(opts.builds),
        imagesDir,
        log,
        bus,
      })
    : undefined;
  const services = { images, jobs, events, metrics, power, ...(builds ? { builds } : {}) };
  const { app, routes } = createApi({
    log,
    version: "test",
    state: () => "ready",
    store,
    signingKey: key,
    rateLimits: { ...HIGH_LIMITS, ...opts.rateLimits },
    directories: { data: dir, images: imagesDir },
    services: { ...services, storage: { imagesDir } },
  });
  const servers: RunningHttpServer[] = [];
  t.teardown(async () => {
    events.closeAll();
    await Promise.all(servers.map((s) => s.close(1000)));
    await jobs.stop(5000);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    app,
    routes,
    store,
    tokens: new TokenService(key, store),
    key,
    dir,
    logLines: lines,
    now: { ms: Date.now() },
    targetChanges: [],
    services,
    bus,
    imagesDir,
    woken,
    ipmiCalls,
    async listen() {
      const server = await startHttpServer({ fetch: app.fetch, listen: "127.0.0.1:0", log });
      servers.push(server);
      return { base: `http://127.0.0.1:${server.address.port}`, server };
    },
  };
}

/** A GET with node:http whose response is read as it arrives (for event streams). */
export function openStream(
  url: string,
  headers: Record<string, string>,
): Promise<{
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Text received so far. */
  text: () => string;
  /** Resolves once the text matches, rejects after timeoutMs. */
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
  ended: Promise<void>;
  close: () => void;
}> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      let buf = "";
      const ended = new Promise<void>((r) => {
        res.once("close", () => r());
      });
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buf += chunk;
      });
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        text: () => buf,
        waitFor: async (re, timeoutMs = 10_000) => {
          const end = Date.now() + timeoutMs;
          for (;;) {
            const m = buf.match(re);
            if (m) return m;
            if (Date.now() > end) throw new Error(`timed out waiting for ${re} in ${buf}`);
            await new Promise((r) => setTimeout(r, 20));
          }
        },
        ended,
        close: () => req.destroy(),
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/** The SSE events in a text, parsed (RFC-less but per the WHATWG EventSource format). */
export function parseSse(text: string): { id?: string; event?: string; data: string }[] {
  const out: { id?: string; event?: string; data: string }[] = [];
  for (const block of text.split("\n\n")) {
    const e: { id?: string; event?: string; data: string } = { data: "" };
    let has = false;
    for (const line of block.split("\n")) {
      if (line.startsWith(":") || line === "") continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "data") {
        e.data += (e.data ? "\n" : "") + value;
        has = true;
      } else if (field === "id") e.id = value;
      else if (field === "event") e.event = value;
    }
    if (has) out.push(e);
  }
  return out;
}
