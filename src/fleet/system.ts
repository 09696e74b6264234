/**
 * systeminformation, loaded on the first request for the figures: it is 0.7 MB of
 * JavaScript (1.8 MB of heap, ~0.1 s of CPU to load) that only /api/health/detailed uses,
 * so the daemon does not pay for it at every start and in its idle memory.
 */
let si: Promise<typeof import("systeminformation")> | undefined;
const loadSi = () => {
  si ??= import("systeminformation").then((m) => m.default);
  return si;
};

export interface SystemFigures {
  cpu_percent: number;
  cpu: { cores: number; model: string; load_1m: number | null };
  memory: { total_mb: number; available_mb: number; percent_used: number };
  /** Physical disks: "SSD", "HD", "NVMe" (as the kernel reports rotation), with their size. */
  disks: { device: string; name: string; type: string; interface: string; size_gb: number }[];
  /** Mounted file systems and how full they are. */
  filesystems: { mount: string; type: string; size_gb: number; used_percent: number }[];
  /** Network interfaces with their link speed (null when the driver does not say). */
  network: { iface: string; speed_mbps: number | null; state: string; mac: string }[];
  collected_at: string;
}

const round1 = (n: number) => Math.round(n * 10) / 10;
const gb = (bytes: number) => round1(bytes / 2 ** 30);

/**
 * The server's figures from `systeminformation`, cached for a while: it runs lsblk and
 * reads /proc and /sys, seconds on a busy host, and a dashboard polls.
 */
export class SystemFiguresCache {
  #value: SystemFigures | undefined;
  #at = 0;
  #pending: Promise<SystemFigures> | undefined;

  constructor(
    private readonly ttlMs = 15_000,
    private readonly clock: () => number = Date.now,
  ) {}

  get(): Promise<SystemFigures> {
    if (this.#value && this.clock() - this.#at < this.ttlMs) return Promise.resolve(this.#value);
    this.#pending ??= collect().then(
      (v) => {
        this.#value = v;
        this.#at = this.clock();
        this.#pending = undefined;
        return v;
      },
      (err: unknown) => {
        this.#pending = undefined;
        throw err;
      },
    );
    return this.#pending;
  }
}

async function collect(): Promise<SystemFigures> {
  const si = await loadSi();
  const [load, cpu, mem, disks, fs, nics] = await Promise.all([
    si.currentLoad(),
    si.cpu(),
    si.mem(),
    si.diskLayout().catch(() => []),
    si.fsSize().catch(() => []),
    si.networkInterfaces().catch(() => []),
  ]);
  const nicList = Array.isArray(nics) ? nics : [nics];
  return {
    cpu_percent: round1(load.currentLoad),
    cpu: {
      cores: cpu.cores,
      model: `${cpu.manufacturer} ${cpu.brand}`.trim(),
      load_1m: load.avgLoad ?? null,
    },
    memory: {
      total_mb: Math.round(mem.total / 2 ** 20),
      available_mb: Math.round(mem.available / 2 ** 20),
      percent_used: mem.total ? round1(((mem.total - mem.available) / mem.total) * 100) : 0,
    },
    disks: disks.map((d) => ({
      device: d.device,
      name: d.name,
      type: d.type,
      interface: d.interfaceType,
      size_gb: gb(d.size),
    })),
    filesystems: fs.map((f) => ({
      mount: f.mount,
      type: f.type,
      size_gb: gb(f.size),
      used_percent: round1(f.use),
    })),
    network: nicList
      .filter((n) => !n.internal)
      .map((n) => ({
        iface: n.iface,
        speed_mbps: typeof n.speed === "number" && n.speed > 0 ? n.speed : null,
        state: n.operstate,
        mac: n.mac,
      })),
    collected_at: new Date().toISOString(),
  };
}
