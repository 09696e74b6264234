import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApi } from "../../src/api/app.js";
import { TokenService } from "../../src/api/auth/tokens.js";
import type { ComponentStatus } from "../../src/api/routes/health.js";
import { type RunningHttpServer, startHttpServer } from "../../src/daemon/http-server.js";
import { type BusEvent, EventBus } from "../../src/events/bus.js";
import { registerBulkJob } from "../../src/fleet/bulk.js";
import { FleetMonitor } from "../../src/fleet/monitor.js";
import { JobRunner } from "../../src/jobs/runner.js";
import { IpmiPower } from "../../src/power/ipmi.js";
import { PowerService } from "../../src/power/service.js";
import { Store } from "../../src/store/index.js";
import type { Role, User } from "../../src/store/users.js";
import { HIGH_LIMITS, memoryLogger } from "./helpers.js";

export const STALL_MS = 60_000;

/**
 * The API with the fleet's real parts (monitor, alerts, bulk job, job runner, event bus)
 * on a real loopback HTTP server. Power is the real PowerService over a recorded
 * Wake-on-LAN sender and a recorded ipmitool (no BMC is contacted). The monitor's clock
 * is `skewMs` ahead of the wall clock, so a test moves time past the stall bound.
 */
export async function fleetApi(
  t: { teardown: (fn: () => void | Promise<void>) => void },
  opts: { components?: Record<string, ComponentStatus>; ipmiFails?: boolean } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), `bf-fleet-${process.pid}-`));
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  const { log, lines } = memoryLogger();
  const key = new Uint8Array(32).map((_, i) => (i * 29 + 5) & 0xff);
  const bus = new EventBus();
  const events: BusEvent[] = [];
  bus.on((e) => events.push(e));
  const clock = { skewMs: 0 };
  const fleet = new FleetMonitor({
    store,
    log,
    bus,
    stallAfterMs: STALL_MS,
    tickMs: 3_600_000,
    clock: () => Date.now() + clock.skewMs,
    io: async (iqns) => new Map(iqns.map((q) => [q, { readBytes: 0, writeBytes: 0, commands: 0 }])),
  });
  const woken: string[] = [];
  const ipmiCalls: string[][] = [];
  const power = new PowerService({
    ipmi: new IpmiPower({
      run: async (cmd, args) => {
        ipmiCalls.push([cmd, ...args]);
        if (opts.ipmiFails) throw new Error("Unable to establish IPMI v2 / RMCP+ session");
        return { stdout: "Chassis Power Control: Down/Off\n", stderr: "" };
      },
    }),
    wake: async (mac) => {
      woken.push(mac);
    },
  });
  const jobs = new JobRunner({ store, log, bus });
  const resets: number[] = [];
  registerBulkJob(jobs, {
    store,
    power: () => power,
    resetOverlays: async (id) => {
      resets.push(id);
    },
  });
  const { app } = createApi({
    log,
    version: "test",
    state: () => "ready",
    store,
    signingKey: key,
    rateLimits: HIGH_LIMITS,
    directories: { data: dir },
    iscsi: { portalIp: "10.99.0.1", portalPort: 3260 },
    services: {
      fleet,
      power,
      jobs,
      config: () => ({ data_dir: dir, bmc: { password: "********" } }),
      ...(opts.components ? { components: async () => opts.components! } : {}),
    },
  });
  const server: RunningHttpServer = await startHttpServer({
    fetch: app.fetch,
    listen: "127.0.0.1:0",
    log,
  });
  t.teardown(async () => {
    fleet.stop();
    await server.close(1000);
    await jobs.stop(5000);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const base = `http://127.0.0.1:${server.address.port}`;
  const tokens = new TokenService(key, store);
  return {
    store,
    bus,
    events,
    fleet,
    jobs,
    clock,
    woken,
    ipmiCalls,
    resets,
    logLines: lines,
    base,
    async user(username: string, role: Role): Promise<{ user: User; token: string }> {
      const user = store.users.create({ username, password_hash: "x", role });
      return { user, token: (await tokens.issue(user, null)).access_token };
    },
    /** A request over real HTTP: status, parsed JSON body, headers. */
    async http(method: string, path: string, token?: string, body?: unknown) {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      // biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary JSON answers
      let json: any;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, json, headers: res.headers };
    },
  };
}
