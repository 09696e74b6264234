import { mkdirSync } from "node:fs";
import type { Logger } from "pino";
import type { Config } from "../daemon/config.js";
import type { EventBus } from "../events/bus.js";
import type { BootfleetMetrics } from "../metrics/bootfleet.js";
import type { SanbootPreparer } from "../netboot/boot-script.js";
import type { Store } from "../store/index.js";
import { createLvmThinDriver } from "./overlay/lvm-thin.js";
import { createReflinkDriver } from "./overlay/reflink.js";
import type { OverlayDriver } from "./overlay/types.js";
import { Reconciler } from "./reconciler.js";
import { execRunner } from "./target/exec.js";
import { LioDriver } from "./target/lio.js";
import { selectTargetDriver } from "./target/select.js";
import { TgtDriver } from "./target/tgt.js";

export interface Iscsi {
  reconciler: Reconciler;
  sanboot: SanbootPreparer;
  /** Called by the API after a change to a machine or its targets. */
  onTargetChanged(machineId: number): void;
  close(): void;
  summary(): string;
}

/**
 * The iSCSI side of the appliance: picks the target and overlay drivers, adopts what
 * runs at start, then keeps boot sessions and overlay usage up to date. Failure to set
 * it up is an error the daemon reports and survives (it still serves everything else),
 * so a laptop without XFS or tgtd can run `npm start`.
 */
export async function startIscsi(opts: {
  config: Config;
  store: Store;
  log: Logger;
  bus?: EventBus;
  metrics?: BootfleetMetrics;
}): Promise<Iscsi> {
  const { config, store } = opts;
  const log = opts.log.child({ module: "iscsi" });
  const c = config.iscsi;
  const overlays: OverlayDriver =
    c.overlay_driver === "lvm-thin"
      ? createLvmThinDriver({ vg: c.lvm_volume_group, logger: log })
      : createReflinkDriver({ dir: c.overlays_dir, imageDir: config.images_dir, logger: log });
  mkdirSync(c.overlays_dir, { recursive: true, mode: 0o750 });
  await overlays.check();
  const targets = await selectTargetDriver({
    mode: c.target_driver,
    logger: log,
    lio: () =>
      new LioDriver({ iqnPrefix: c.iqn_prefix, logger: log, saveconfigPath: c.lio_saveconfig }),
    tgt: () =>
      new TgtDriver({
        iqnPrefix: c.iqn_prefix,
        confDir: c.tgt_conf_dir,
        controlPort: c.tgt_control_port,
        logger: log,
      }),
    ...(process.getuid?.() === 0 ? { run: execRunner() } : {}),
  });
  const reconciler = new Reconciler({
    store,
    ...(opts.bus ? { bus: opts.bus } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    targets,
    overlays,
    log,
    portal: { address: c.portal_address || "0.0.0.0", port: c.portal_port },
    imagePath: (imageId) => {
      const image = store.images.get(imageId);
      if (image?.status !== "ready" || image.current_version === null) return undefined;
      return store.images.versions(imageId).find((v) => v.version === image.current_version)?.path;
    },
  });
  await reconciler.startup();

  let polling = false;
  let polls = 0;
  const timer = setInterval(() => {
    if (polling) return;
    polling = true;
    // Usage needs a file-system walk per overlay: every twelfth poll is plenty.
    const work =
      polls++ % 12 === 0
        ? reconciler.pollSessions().then(() => reconciler.recordUsage())
        : reconciler.pollSessions();
    work
      .catch((err: unknown) => log.warn({ err: String(err) }, "iSCSI session poll failed"))
      .finally(() => {
        polling = false;
      });
  }, c.session_poll_ms);
  timer.unref();

  return {
    reconciler,
    sanboot: (machine, target) => reconciler.prepareSanboot(machine, target),
    onTargetChanged: (machineId) => {
      reconciler
        .reconcileMachine(machineId)
        .catch((err: unknown) =>
          log.error({ machine_id: machineId, err: String(err) }, "reconcile failed"),
        );
    },
    close: () => clearInterval(timer),
    summary: () => `iSCSI ${targets.name}/${overlays.name}`,
  };
}
