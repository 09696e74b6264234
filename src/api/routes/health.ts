import { readFile, statfs } from "node:fs/promises";
import { cpus, freemem, totalmem } from "node:os";
import { directoryHealth } from "../../diskspace/usage.js";
import { SystemFiguresCache } from "../../fleet/system.js";
import { errorText } from "../../lib/error-text.js";
import { defineRoute, READERS, type RouteModule } from "../route.js";

/** One part of the appliance and whether it works, in a sentence. */
export interface ComponentStatus {
  status: "healthy" | "disabled" | "unhealthy";
  reason: string;
}

declare module "../route.js" {
  interface ApiServices {
    /** DHCP, TFTP, HTTP, the iSCSI driver and the overlay file system (the daemon's). */
    components?: () => Promise<Record<string, ComponentStatus>>;
  }
}

/** GET /api/health (public, GGnet shape) and /api/health/detailed (database, folders, system). */
export const healthRoutes: RouteModule = (deps) => {
  const health = deps;
  const figures = new SystemFiguresCache();
  return [
    defineRoute({
      method: "GET",
      path: "/health",
      tag: "health",
      summary: "Basic health check: 200 healthy once ready, 503 before and while stopping",
      roles: "public",
      rateLimit: "none",
      handler: ({ c }) => {
        const state = health.state();
        return c.json(
          {
            status: state === "ready" ? "healthy" : state,
            timestamp: new Date(deps.clock()).toISOString(),
            service: "bootfleet",
            version: health.version,
          },
          state === "ready" ? 200 : 503,
        );
      },
    }),
    defineRoute({
      method: "GET",
      path: "/health/detailed",
      tag: "health",
      summary:
        "Detailed health: database, directories, DHCP, TFTP, HTTP, iSCSI driver, overlay file system, system figures",
      roles: READERS,
      handler: async ({ c }) => {
        let database: { status: string; error: string | null };
        try {
          database = deps.store.ping()
            ? { status: "healthy", error: null }
            : { status: "unhealthy", error: "ping failed" };
        } catch (err) {
          database = { status: "unhealthy", error: (err as Error).message };
        }
        const directories: Record<string, { exists: boolean; writable: boolean; status: string }> =
          {};
        for (const dir of Object.values(deps.directories)) directories[dir] = await dirHealth(dir);
        const system: Record<string, unknown> = await systemInfo(
          deps.directories.data ?? Object.values(deps.directories)[0] ?? "/",
        );
        try {
          const f = await figures.get();
          Object.assign(system, {
            cpu_percent: f.cpu_percent,
            cpu: f.cpu,
            disks: f.disks,
            filesystems: f.filesystems,
            network: f.network,
          });
        } catch (err) {
          system.figures_error = errorText(err);
        }
        const services: Record<string, ComponentStatus> = deps.services.components
          ? await deps.services.components()
          : {};
        const ok =
          database.status === "healthy" &&
          Object.values(directories).every((d) => d.status === "healthy") &&
          Object.values(services).every((x) => x.status !== "unhealthy") &&
          health.state() === "ready";
        return c.json(
          {
            status: ok ? "healthy" : "unhealthy",
            timestamp: new Date(deps.clock()).toISOString(),
            service: "bootfleet",
            version: health.version,
            checks: { database, directories, services, system },
          },
          ok ? 200 : 503,
        );
      },
    }),
  ];
};

/** The GGnet shape of a folder's health: usable or not (how full is /storage/health's). */
async function dirHealth(dir: string) {
  const { exists, writable } = await directoryHealth(dir);
  return { exists, writable, status: exists && writable ? "healthy" : "unhealthy" };
}

const round1 = (n: number) => Math.round(n * 10) / 10;

/** CPU busy share over a short sample, memory (MemAvailable), and the data folder's disk. */
async function systemInfo(diskPath: string) {
  const before = cpuTimes();
  await new Promise((r) => setTimeout(r, 100));
  const after = cpuTimes();
  const total = after.total - before.total;
  const cpu = total > 0 ? ((total - (after.idle - before.idle)) / total) * 100 : 0;
  const totalMb = totalmem() / 2 ** 20;
  let availableMb = freemem() / 2 ** 20;
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile("/proc/meminfo", "utf8"));
    if (m) availableMb = Number(m[1]) / 1024;
  } catch {
    // not Linux: free memory is the closest figure
  }
  let disk = { total_gb: 0, free_gb: 0, percent_used: 0 };
  try {
    const s = await statfs(diskPath);
    const totalB = s.blocks * s.bsize;
    const freeB = s.bavail * s.bsize;
    disk = {
      total_gb: round1(totalB / 2 ** 30),
      free_gb: round1(freeB / 2 ** 30),
      percent_used: totalB ? round1(((totalB - freeB) / totalB) * 100) : 0,
    };
  } catch {
    // folder missing: reported by the directory check
  }
  return {
    cpu_percent: round1(cpu),
    memory: {
      total_mb: Math.round(totalMb),
      available_mb: Math.round(availableMb),
      percent_used: round1(((totalMb - availableMb) / totalMb) * 100),
    },
    disk,
  };
}

function cpuTimes() {
  let idle = 0;
  let total = 0;
  for (const c of cpus()) {
    idle += c.times.idle;
    total += c.times.idle + c.times.user + c.times.nice + c.times.sys + c.times.irq;
  }
  return { idle, total };
}
