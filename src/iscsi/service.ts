import { mkdirSync } from "node:fs";
import type { Logger } from "pino";
import { checkReserve } from "../diskspace/reserve.js";
import type { EventBus } from "../events/bus.js";
import { commandRunner } from "../host/exec.js";
import type { VersionStorage } from "../images/versions.js";
import { errorText } from "../lib/error-text.js";
import type { BootfleetMetrics } from "../metrics/bootfleet.js";
import type { SanbootPreparer } from "../netboot/boot-script.js";
import type { Store } from "../store/index.js";
import { chapSecret } from "./identity.js";
import { chooseOverlayDriver } from "./overlay/select.js";
import { Reconciler } from "./reconciler.js";
import type { IscsiSettings } from "./settings.js";
import { LioDriver } from "./target/lio.js";
import { selectTargetDriver } from "./target/select.js";
import { TgtDriver } from "./target/tgt.js";
import type { TargetDriver, TargetIo } from "./target/types.js";
import { versionStorage } from "./version-storage.js";
import { BootSetWarmer } from "./warm.js";

export interface Iscsi {
  reconciler: Reconciler;
  sanboot: SanbootPreparer;
  /** Called by the API after a change to a machine or its targets. */
  onTargetChanged(machineId: number): void;
  /** Fresh overlays for a machine that is not running (refused while logged in). */
  resetOverlays(machineId: number): Promise<void>;
  /**
   * I/O each target served its logged-in sessions, read at once where the driver can;
   * undefined when the driver cannot count it. A target that could not be read is absent.
   */
  io: ((iqns: readonly string[]) => Promise<Map<string, TargetIo>>) | undefined;
  /** Stops polling and warming; ends the overlay driver's recordings (nothing written). */
  close(): Promise<void>;
  summary(): string;
  /** The disk work of the image update cycle (images/versions.ts), on this overlay driver. */
  versionStorage: VersionStorage;
  /** Whether the target driver answers and the overlay file system is usable, with why. */
  health(): Promise<{ driver: ComponentHealth; overlays: ComponentHealth }>;
}

export interface ComponentHealth {
  status: "healthy" | "unhealthy";
  reason: string;
}

/**
 * The iSCSI side of the appliance: picks the target and overlay drivers, adopts what
 * runs at start, then keeps boot sessions and overlay usage up to date. Failure to set
 * it up is an error the daemon reports and survives (it still serves everything else),
 * so a laptop without XFS or tgtd can run `npm start`.
 */
export async function startIscsi(opts: {
  settings: IscsiSettings;
  store: Store;
  log: Logger;
  bus?: EventBus;
  metrics?: BootfleetMetrics;
}): Promise<Iscsi> {
  const { settings: s, store } = opts;
  const log = opts.log.child({ module: "iscsi" });
  mkdirSync(s.overlaysDir, { recursive: true, mode: 0o750 });
  // The target driver first: which overlay driver "auto" takes depends on it.
  const targets = await selectTargetDriver({
    mode: s.targetDriver,
    logger: log,
    lio: () =>
      new LioDriver({ iqnPrefix: s.iqnPrefix, logger: log, saveconfigPath: s.lio.saveconfigPath }),
    tgt: () =>
      new TgtDriver({
        iqnPrefix: s.iqnPrefix,
        confDir: s.tgt.confDir,
        controlPort: s.tgt.controlPort,
        logger: log,
        spareSecret: chapSecret,
      }),
    ...(s.mayLoadModules ? { run: commandRunner({ timeoutMs: 15_000 }) } : {}),
  });
  const { driver: overlays, reason: overlayReason } = await chooseOverlayDriver(
    s.overlayDriver,
    s,
    targets.name,
    log,
  );
  await overlays.check();
  const currentPath = (imageId: number): string | undefined => {
    const image = store.images.get(imageId);
    if (image?.status !== "ready" || image.current_version === null) return undefined;
    return store.images.versions(imageId).find((v) => v.version === image.current_version)?.path;
  };
  const reconciler = new Reconciler({
    store,
    ...(opts.bus ? { bus: opts.bus } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    targets,
    overlays,
    log,
    portal: s.portal,
    ...(s.reservePercent !== undefined
      ? { reserve: () => checkReserve(s.overlaysDir, s.reservePercent!) }
      : {}),
    imagePath: currentPath,
  });
  await reconciler.startup();

  // Only dm-snapshot overlays read unwritten blocks through the image file's page cache.
  const warmer = new BootSetWarmer({
    maxBytes: overlays.name === "dm-snapshot" ? s.warmMaxBytes : 0,
    log,
  });
  for (const path of store.images.currentVersionPaths()) void warmer.warm(path);
  const stopWarmOnChange = opts.bus?.on((e) => {
    if (e.type !== "image_version_changed") return;
    if (e.payload.action !== "update_committed" && e.payload.action !== "rolled_back") return;
    const path = currentPath(e.payload.image_id);
    if (path) void warmer.warm(path);
  });

  let polling = false;
  let polls = 0;
  const timer = setInterval(() => {
    if (polling) return;
    polling = true;
    // Usage needs a file-system walk per overlay: every twelfth poll is plenty. So is the
    // pass that makes the next boot's secret ready on machines that are off, half-way
    // between (a minute at the default poll; the first one after tgt's spares are made).
    const turn = polls++ % 12;
    const work =
      turn === 0
        ? reconciler.pollSessions().then(() => reconciler.recordUsage())
        : turn === 6
          ? reconciler.pollSessions().then(() => reconciler.freshenIdle())
          : reconciler.pollSessions();
    work
      .catch((err: unknown) => log.warn({ err: errorText(err) }, "iSCSI session poll failed"))
      .finally(() => {
        polling = false;
      });
  }, s.sessionPollMs);
  timer.unref();

  return {
    reconciler,
    sanboot: (machine, target) => reconciler.prepareSanboot(machine, target),
    onTargetChanged: (machineId) => {
      reconciler
        .reconcileMachine(machineId)
        .catch((err: unknown) =>
          log.error({ machine_id: machineId, err: errorText(err) }, "reconcile failed"),
        );
    },
    resetOverlays: (machineId) => reconciler.resetMachineOverlays(machineId),
    io: ioReader(targets, log),
    versionStorage: versionStorage(reconciler, overlays, store),
    close: async () => {
      clearInterval(timer);
      stopWarmOnChange?.();
      warmer.close();
      await overlays.close?.();
    },
    summary: () => `iSCSI ${targets.name}/${overlays.name}`,
    health: async () => {
      const driver = await targets.list().then(
        (iqns): ComponentHealth => ({
          status: "healthy",
          reason: `${targets.name} answers: ${iqns.length} bootfleet targets`,
        }),
        (err: unknown): ComponentHealth => ({
          status: "unhealthy",
          reason: `${targets.name}: ${errorText(err)}`,
        }),
      );
      const overlay = await overlays.check().then(
        (): ComponentHealth => ({
          status: "healthy",
          reason: `${overlays.name} overlays usable in ${s.overlaysDir} (${overlayReason})`,
        }),
        (err: unknown): ComponentHealth => ({
          status: "unhealthy",
          reason: `${overlays.name}: ${errorText(err)}`,
        }),
      );
      return { driver, overlays: overlay };
    },
  };
}

/**
 * The fleet's I/O reading: the driver's one read of all its targets (allIo), or, where it
 * has none or that read fails (an older tgt without `stat --mode system`), one per target.
 */
function ioReader(
  targets: TargetDriver,
  log: Logger,
): ((iqns: readonly string[]) => Promise<Map<string, TargetIo>>) | undefined {
  const one = targets.io?.bind(targets);
  if (!one) return undefined;
  const each = async (iqns: readonly string[]) => {
    const all = new Map<string, TargetIo>();
    for (const iqn of iqns) {
      try {
        all.set(iqn, await one(iqn));
      } catch (err) {
        log.debug({ iqn, err: errorText(err) }, "target I/O not read");
      }
    }
    return all;
  };
  if (!targets.allIo) return each;
  const allIo = targets.allIo.bind(targets);
  return (iqns) =>
    allIo().catch((err: unknown) => {
      log.debug({ err: errorText(err) }, "target I/O not read at once; per target");
      return each(iqns);
    });
}
