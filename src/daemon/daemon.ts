import { chmodSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { createApp, type DaemonState } from "../api/app.js";
import {
  createInitialAdmin,
  INITIAL_PASSWORD_FILE,
  retireInitialPassword,
} from "../api/auth/initial-admin.js";
import { loadOrCreateSigningKey } from "../api/auth/keys.js";
import type { ApiServices } from "../api/route.js";
import { webRoutes } from "../api/web.js";
import { type Config, maskedConfig } from "../config/config.js";
import { registerCleanupJob, sweepDeadUploads } from "../diskspace/cleanup.js";
import { checkReserve } from "../diskspace/reserve.js";
import { EventBus } from "../events/bus.js";
import { EventStreams } from "../events/streams.js";
import { registerBulkJob } from "../fleet/bulk.js";
import { FleetMonitor } from "../fleet/monitor.js";
import { interfaceIPv4, ownMacs } from "../host/interfaces.js";
import { NeighbourTable } from "../host/neighbours.js";
import { ImageBuildService } from "../images/build.js";
import { DropFolder } from "../images/drop-folder.js";
import { ImageFileGuard } from "../images/file-guard.js";
import { RecipeCatalog } from "../images/recipes/catalog.js";
import { ImageService } from "../images/service.js";
import { SnapshotService } from "../images/snapshots.js";
import { declaredOverLimit } from "../images/upload.js";
import { VersionService } from "../images/versions.js";
import { type Iscsi, startIscsi } from "../iscsi/service.js";
import { JobRunner } from "../jobs/runner.js";
import { errorText } from "../lib/error-text.js";
import { BootfleetMetrics } from "../metrics/bootfleet.js";
import { connectMetrics } from "../metrics/connect.js";
import { createNetboot, type Netboot } from "../netboot/service.js";
import { IpmiPower, PowerError } from "../power/ipmi.js";
import { PowerService } from "../power/service.js";
import { wakeOnLan } from "../power/wol.js";
import { Store } from "../store/index.js";
import { WalCheckpoints } from "../store/wal-checkpoints.js";
import { VERSION } from "../version.js";
import { changedKeys, LIVE_KEYS } from "./config-diff.js";
import { isUploadRequest, type RunningHttpServer, startHttpServer } from "./http-server.js";
import { iscsiSettings } from "./iscsi-settings.js";
import { type RunningLocalSocket, startLocalSocket } from "./local-socket.js";
import { netbootSettings } from "./netboot-settings.js";
import type { Notifier } from "./sdnotify.js";

/**
 * The running daemon: it owns the store and every listener, and knows the order in
 * which they start and stop. Each service comes in through this one place, so the
 * lifecycle (ready only once all are bound, drain on SIGTERM) holds for all of them.
 */
export class Daemon {
  private state: DaemonState = "starting";
  private store: Store | undefined;
  private walCheckpoints: WalCheckpoints | undefined;
  private http: RunningHttpServer | undefined;
  private localSocket: RunningLocalSocket | undefined;
  private netboot: Netboot | undefined;
  private iscsi: Iscsi | undefined;
  private iscsiProblem: string | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private uploadSweepTimer: NodeJS.Timeout | undefined;
  private jobs: JobRunner | undefined;
  private streams: EventStreams | undefined;
  private fleet: FleetMonitor | undefined;
  private power: PowerService | undefined;
  private images: ImageService | undefined;
  private dropFolder: DropFolder | undefined;
  private fileGuard: ImageFileGuard | undefined;
  /**
   * The event bus and the metrics, for the services that report to them (netboot:
   * `metrics.dhcpOffer`, `tftpTransfer`, `scriptServed`, `bootPhase`; bus events
   * `machine_discovered`, `session_started`...). Set in start(), before netboot is built.
   */
  bus: EventBus | undefined;
  metrics: BootfleetMetrics | undefined;

  constructor(
    private config: Config,
    private readonly log: Logger,
    private readonly notifier: Notifier,
  ) {}

  get currentState(): DaemonState {
    return this.state;
  }

  async start(): Promise<void> {
    const c = this.config;
    for (const dir of [c.data_dir, c.images_dir, c.tftp.root, c.iscsi.overlays_dir]) {
      mkdirSync(dir, { recursive: true, mode: 0o750 });
    }
    const dbPath = join(c.data_dir, "bootfleet.db");
    // At every start, not only at install: a folder loosened by hand or restored from a
    // backup must not leave password hashes and CHAP secrets readable by other users.
    makePrivate(c.data_dir, 0o750);
    this.store = Store.open({ path: dbPath, busyTimeoutMs: c.store.busy_timeout_ms });
    for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) makePrivate(f, 0o600);
    // Checkpoints in quiet moments, not in the commits of a boot storm (wal-checkpoints.ts).
    this.walCheckpoints = new WalCheckpoints(this.store.db, { log: this.log });
    this.walCheckpoints.start();
    // A first start hashes the admin's one-time password: scrypt, ~0.4 s of CPU on libuv's
    // thread pool. Begun here, it runs beside the services' and iSCSI's start, and is
    // awaited before the API is built (whoever sees /api/health answer may read the file).
    // The no-op catch only keeps an early failure from counting as unhandled.
    const initialPasswordFile = join(c.data_dir, INITIAL_PASSWORD_FILE);
    const adminReady = createInitialAdmin(this.store, initialPasswordFile, this.log);
    adminReady.catch(() => {});
    const services = this.startServices(this.store);

    this.iscsi = await startIscsi({
      settings: iscsiSettings(c, { isRoot: process.getuid?.() === 0 }),
      store: this.store,
      log: this.log,
      ...(this.bus ? { bus: this.bus } : {}),
      ...(this.metrics ? { metrics: this.metrics } : {}),
    }).catch((err: unknown) => {
      // Everything else still serves (API, netboot, discovery); sanboot machines are told
      // their disk is not ready, and the reason is in the log and the STATUS line.
      this.iscsiProblem = errorText(err);
      this.log.error({ reason: this.iscsiProblem }, "iSCSI unavailable");
      return undefined;
    });
    if (this.iscsi) services.versions?.attach(this.iscsi.versionStorage);

    // The fleet's live state: after iSCSI, whose driver tells whether I/O can be counted.
    this.fleet = new FleetMonitor({
      store: this.store,
      log: this.log.child({ module: "fleet" }),
      bus: this.bus,
      stallAfterMs: c.fleet.stall_timeout_seconds * 1000,
      io: this.iscsi?.io,
      reserve: { dirs: [c.images_dir, c.iscsi.overlays_dir], percent: c.storage.reserve_percent },
    });
    services.fleet = this.fleet;
    services.config = () => maskedConfig(this.config);
    services.components = () => this.components();
    if (this.iscsi) {
      const r = this.iscsi.reconciler;
      services.quarantine = { list: () => r.quarantine(), delete: (n) => r.deleteQuarantined(n) };
    }

    const adminCreated = await adminReady;
    const app = createApp({
      initialPasswordFile,
      version: VERSION,
      state: () => this.state,
      log: this.log,
      store: this.store,
      signingKey: loadOrCreateSigningKey(join(c.data_dir, "api-signing.key")),
      rateLimits: { general: { limit: c.api.rate_limit_per_minute, windowSeconds: 60 } },
      iscsi: {
        portalIp: c.iscsi.portal_address || "127.0.0.1",
        portalPort: c.iscsi.portal_port,
        iqnPrefix: c.iscsi.iqn_prefix,
      },
      onTargetChanged: (machineId) => this.iscsi?.onTargetChanged(machineId),
      directories: {
        data: c.data_dir,
        images: c.images_dir,
        tftp: c.tftp.root,
        overlays: c.iscsi.overlays_dir,
      },
      services,
    });
    this.netboot = await createNetboot({
      settings: netbootSettings(c, this.log, {
        interfaceIPv4,
        httpPort: () => this.http?.address.port ?? 0,
        replyDelayMs: () => this.config.dhcp.reply_delay_ms,
        isOwnMac: ownMacs(),
      }),
      store: this.store,
      log: this.log,
      bootKey: loadOrCreateSigningKey(join(c.data_dir, "boot-token.key")),
      macForIp: new NeighbourTable().macForIp,
      ...(this.iscsi ? { sanboot: this.iscsi.sanboot } : {}),
      ...(this.bus ? { bus: this.bus } : {}),
      onPhase: (machineId) => this.fleet?.evaluateMachine(machineId),
      onPhases: (machineIds) => this.fleet?.evaluateMachines(machineIds),
      onTemplateProblem: (file, message) =>
        this.fleet?.alerts.set(message !== null, {
          cause: `template_override:${file}`,
          severity: "warning",
          machine_id: null,
          message: message ?? `template override ${file} is in use`,
          detail: { file },
        }),
      ...(this.metrics ? { metrics: this.metrics } : {}),
    });
    app.route("/boot", this.netboot.routes as unknown as typeof app);
    app.route("/", webRoutes() as unknown as typeof app);
    this.http = await startHttpServer({
      fetch: app.fetch,
      listen: c.http.listen,
      log: this.log,
      expectContinue: (req) =>
        !(
          isUploadRequest(req.method, req.url) &&
          declaredOverLimit(req.headers["content-length"], c.images.upload_max_bytes)
        ),
    });
    this.log.info(
      { address: this.http.address.address, port: this.http.address.port },
      "HTTP listening",
    );
    this.localSocket = await startLocalSocket({
      fetch: app.fetch,
      path: c.http.socket,
      log: this.log,
    });
    await this.netboot.start();
    this.fleet.start();
    await this.watchImages();

    this.state = "ready";
    this.notifier.ready(this.summary());
    this.startWatchdog();
    this.log.info({ version: VERSION }, "bootfleetd ready");
    if (!adminCreated) this.retireInitialPassword(initialPasswordFile);
    // A bootfleet group that only NSS knows (not in /etc/group): asked now, not before ready.
    void this.localSocket.openToNssGroup();
  }

  /**
   * A restart checks whether a one-time password file left from the first start still opens
   * the only admin account (it is deleted once it does not): a scrypt (~0.4 s of CPU),
   * paid only while the file is there. Nothing needs the answer to serve, so it runs once
   * the daemon is ready instead of before the first request.
   */
  private retireInitialPassword(file: string): void {
    const store = this.store;
    if (!store) return;
    retireInitialPassword(store, file, this.log).catch((err: unknown) =>
      this.log.warn({ err: errorText(err), path: file }, "one-time password file check failed"),
    );
  }

  /**
   * SIGHUP: apply what can change live, name what needs a restart. An invalid new
   * configuration is refused as a whole and the running one stays.
   */
  reload(next: Config): { applied: string[]; needsRestart: string[] } {
    this.notifier.reloading();
    const changed = changedKeys(this.config, next);
    const applied = changed.filter((k) => LIVE_KEYS.has(k));
    const needsRestart = changed.filter((k) => !LIVE_KEYS.has(k));
    if (applied.includes("log.level")) this.log.level = next.log.level;
    this.config = {
      ...this.config,
      log: next.log,
      dhcp: { ...this.config.dhcp, reply_delay_ms: next.dhcp.reply_delay_ms },
    };
    if (applied.length) this.log.info({ keys: applied }, "configuration reloaded");
    if (needsRestart.length) {
      this.log.warn(
        { keys: needsRestart },
        "configuration changes that need a restart: kept the running values",
      );
    }
    if (!changed.length) this.log.info("configuration reloaded: nothing changed");
    this.notifier.ready(this.summary());
    return { applied, needsRestart };
  }

  /**
   * SIGTERM: stop accepting, let work in flight finish within the drain bound, close the
   * database. iSCSI targets are left running: a booted machine must not lose its disk
   * because the management daemon restarts.
   */
  async stop(): Promise<void> {
    if (this.state === "stopping") return;
    this.state = "stopping";
    clearInterval(this.watchdogTimer);
    clearInterval(this.uploadSweepTimer);
    this.notifier.stopping("draining requests in flight");
    this.log.info({ in_flight: this.http?.inFlight() ?? 0 }, "stopping: draining");
    // Event streams never end by themselves: end them, or the drain waits its whole bound.
    this.streams?.closeAll();
    // No new boots first, then let transfers and requests in flight finish.
    await this.netboot?.close();
    // Boot-set recordings in progress delete their dm statistics regions (not written: cut short).
    await this.iscsi?.close();
    this.fleet?.stop();
    await this.http?.close(this.config.shutdown.drain_timeout_ms);
    await this.localSocket?.close();
    await Promise.all([this.dropFolder?.close(), this.fileGuard?.close()]);
    // Running jobs are cancelled and awaited while the store can still record how they ended.
    await this.jobs?.stop(this.config.shutdown.drain_timeout_ms);
    // The offers still queued are written before the last checkpoint takes the WAL in.
    this.store?.pendingOffers.flush();
    this.walCheckpoints?.stop();
    this.store?.close();
    this.log.info("stopped");
    this.notifier.close();
  }

  /**
   * The API's services: event bus and streams, metrics, job runner (with every job type
   * registered before `recover()` settles what a previous process left), images, storage
   * cleanup and power.
   */
  private startServices(store: Store): ApiServices {
    const c = this.config;
    const bus = new EventBus({
      onListenerError: (err, e) =>
        this.log.warn({ err: errorText(err), event: e.type }, "event listener failed"),
    });
    this.bus = bus;
    const metrics = new BootfleetMetrics({ processMetrics: true });
    this.metrics = metrics;
    connectMetrics({ metrics, bus, store });
    const jobs = new JobRunner({ store, log: this.log, bus });
    this.jobs = jobs;
    const images = new ImageService({
      store,
      runner: jobs,
      log: this.log,
      bus,
      imagesDir: c.images_dir,
      maxUploadBytes: c.images.upload_max_bytes,
      reservePercent: c.storage.reserve_percent,
      importDir: c.images.import_dir,
    });
    const builds = new ImageBuildService({
      store,
      runner: jobs,
      images,
      catalog: new RecipeCatalog({
        recipesDir: c.images.recipes_dir,
        cacheDir: c.images.build_cache_dir,
      }),
      imagesDir: c.images_dir,
      log: this.log,
      bus,
      reservePercent: c.storage.reserve_percent,
    });
    this.images = images;
    // Overlays are left out until the iSCSI side can say which overlay ids targets use:
    // without that list the cleanup never touches a machine's disk.
    registerCleanupJob(jobs, {
      imagesDir: c.images_dir,
      referencedImageFiles: () => images.referencedFiles(),
    });
    registerBulkJob(jobs, {
      store,
      power: () => this.power,
      resetOverlays: async (machineId) => {
        if (!this.iscsi)
          throw new Error(`iSCSI is not available: ${this.iscsiProblem ?? "not started"}`);
        await this.iscsi.resetOverlays(machineId);
      },
    });
    const versions = new VersionService({
      store,
      log: this.log,
      runner: jobs,
      bus,
      keepVersions: c.images.keep_versions,
      reserve: () => checkReserve(c.images_dir, c.storage.reserve_percent),
    });
    const snapshots = new SnapshotService({
      store,
      log: this.log,
      versions,
      reserve: () => checkReserve(c.images_dir, c.storage.reserve_percent),
    });
    const recovered = jobs.recover();
    if (recovered.failed.length || recovered.requeued.length) {
      this.log.warn(
        { failed: recovered.failed, requeued: recovered.requeued },
        "jobs left by the previous run: interrupted ones failed, queued ones resumed",
      );
    }
    this.recoverUploads(images, recovered.failed);
    const power = new PowerService({
      ipmi: new IpmiPower({
        baseEnv: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      }),
      wake: async (mac) => {
        const source = wakeSource(c);
        if (!source) {
          throw new PowerError(
            "no address to send Wake-on-LAN from: set [netboot] server_address or interfaces",
          );
        }
        await wakeOnLan({ mac, sourceAddress: source });
      },
    });
    this.power = power;
    this.streams = new EventStreams({ bus });
    return {
      images,
      builds,
      versions,
      snapshots,
      jobs,
      events: this.streams,
      power,
      metrics,
      storage: { imagesDir: c.images_dir },
    };
  }

  /**
   * The image folder watched: a ready image whose file is removed becomes `error` (with an
   * alert), and files copied into the drop folder are imported, those dropped while the
   * daemon was down included.
   */
  private async watchImages(): Promise<void> {
    const c = this.config;
    const images = this.images;
    if (!images) return;
    const log = this.log.child({ module: "images" });
    const alerts = this.fleet?.alerts;
    this.fileGuard = new ImageFileGuard({
      imagesDir: c.images_dir,
      log,
      markFileLost: (path) => images.markFileLost(path),
      checkFiles: () => images.checkFiles(),
      onLost: (image) =>
        alerts?.raise({
          cause: `image_file_lost:${image.id}`,
          severity: "critical",
          machine_id: null,
          message: `image ${image.name}: ${image.status_reason ?? "its file was removed"}`,
          detail: { image_id: image.id },
        }),
    });
    await this.fileGuard.start();
    if (!c.images.import_enabled) return;
    this.dropFolder = new DropFolder({
      dir: c.images.import_dir,
      imagesDir: c.images_dir,
      stableMs: c.images.import_stable_ms,
      log,
      importFile: (path) => images.importDropped(path),
      onProblem: (message, detail) =>
        alerts?.raise({
          cause: "image_drop",
          severity: "warning",
          machine_id: null,
          message,
          detail,
        }),
    });
    await this.dropFolder.start();
  }

  /** DHCP, TFTP, HTTP, the iSCSI driver and the overlay file system, for /api/health/detailed. */
  private async components() {
    const net = this.netboot?.status();
    const notStarted = { status: "unhealthy" as const, reason: "not started" };
    const iscsi = this.iscsi
      ? await this.iscsi.health()
      : {
          driver: { status: "unhealthy" as const, reason: this.iscsiProblem ?? "not started" },
          overlays: { status: "unhealthy" as const, reason: this.iscsiProblem ?? "not started" },
        };
    return {
      dhcp: net?.dhcp ?? notStarted,
      tftp: net?.tftp ?? notStarted,
      http: this.http
        ? {
            status: "healthy" as const,
            reason: `listening on ${this.http.address.address} port ${this.http.address.port}, ${this.http.inFlight()} requests in flight`,
          }
        : notStarted,
      iscsi_driver: iscsi.driver,
      overlay_fs: iscsi.overlays,
    };
  }

  /**
   * What a killed process left of uploads and imports: images stuck `processing` become
   * `error`, and partial files go now (nothing writes them yet) and then every 15 minutes
   * (only files an hour old: the one being written now is never touched).
   */
  private recoverUploads(images: ImageService, interruptedJobs: number[]): void {
    images.failInterruptedImports(interruptedJobs);
    const scan = {
      imagesDir: this.config.images_dir,
      referencedImageFiles: () => images.referencedFiles(),
    };
    const note = (msg: string, path: string, bytes: number) => this.log.info({ path, bytes }, msg);
    const sweep = (minAgeMs?: number) =>
      sweepDeadUploads(minAgeMs === undefined ? scan : { ...scan, minAgeMs }, note).catch(
        (err: unknown) => this.log.warn({ err: errorText(err) }, "partial upload sweep failed"),
      );
    void sweep(0);
    this.uploadSweepTimer = setInterval(() => void sweep(), 15 * 60_000);
    this.uploadSweepTimer.unref();
  }

  private startWatchdog() {
    const interval = this.notifier.watchdogIntervalMs;
    if (!interval) return;
    // Only an event loop that still turns sends the ping, so a hung daemon is restarted.
    this.watchdogTimer = setInterval(() => this.notifier.watchdog(), interval);
    this.notifier.watchdog();
  }

  private summary(): string {
    const c = this.config;
    const parts = [`HTTP ${c.http.listen}`];
    if (this.netboot) parts.push(this.netboot.summary());
    parts.push(
      this.iscsi
        ? this.iscsi.summary()
        : `iSCSI unavailable: ${this.iscsiProblem ?? "not started"}`,
    );
    if (this.store) parts.push(`${this.store.machines.count()} machines`);
    return parts.join(", ");
  }
}

/** The server's address on the LAN: the magic packet is a broadcast out of that interface. */
function wakeSource(c: Config): string | undefined {
  if (c.netboot.server_address) return c.netboot.server_address;
  const first = c.netboot.interfaces[0];
  return first ? interfaceIPv4(first) : undefined;
}

/** chmod, skipping a file that is not there; a refusal names the path and the fix. */
function makePrivate(path: string, mode: number): void {
  try {
    chmodSync(path, mode);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ENOENT") return;
    throw new Error(
      `cannot set mode ${mode.toString(8)} on ${path} (${e.code ?? e.message}): run bootfleetd as the owner of data_dir`,
    );
  }
}
