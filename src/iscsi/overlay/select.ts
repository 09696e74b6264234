import type { Logger } from "pino";
import { errorText } from "../../lib/error-text.js";
import { createDmSnapshotDriver } from "./dm-snapshot.js";
import { createLvmThinDriver } from "./lvm-thin.js";
import { createReflinkDriver } from "./reflink.js";
import type { OverlayDriver, OverlayDriverName } from "./types.js";

/** What any overlay driver may need; each takes its part. */
export interface OverlayDriverSettings {
  /** Folder of overlay files (reflink) or copy-on-write stores (dm-snapshot). */
  overlaysDir: string;
  /** Folder of the image files, which overlays are cloned from (reflink). */
  imagesDir: string;
  /** Volume group of the images' thin pool (lvm-thin). */
  lvmVolumeGroup: string;
  /** How long a version's first boot is recorded as its boot set (dm-snapshot); 0: off. */
  bootSetRecordSeconds?: number;
}

type Factory = (s: OverlayDriverSettings, logger: Logger) => OverlayDriver;

// Adding a driver: its file, its name in OverlayDriverName, and one line here.
const DRIVERS: Record<OverlayDriverName, Factory> = {
  reflink: (s, logger) =>
    createReflinkDriver({ dir: s.overlaysDir, imageDir: s.imagesDir, logger }),
  "lvm-thin": (s, logger) => createLvmThinDriver({ vg: s.lvmVolumeGroup, logger }),
  "dm-snapshot": (s, logger) =>
    createDmSnapshotDriver({
      dir: s.overlaysDir,
      imageDir: s.imagesDir,
      logger,
      bootSetRecordMs: (s.bootSetRecordSeconds ?? 0) * 1000,
    }),
};

export type OverlayDriverMode = OverlayDriverName | "auto";

/** The driver in use and why, for the start log line and `bootfleet doctor`. */
export interface OverlayChoice {
  driver: OverlayDriver;
  reason: string;
}

/**
 * "auto" takes dm-snapshot (machines share the image's page cache: N machines booting one
 * version read it from disk once) when the target driver is LIO and the kernel has
 * device-mapper's snapshot target and loop devices, and reflink otherwise. Not with tgt:
 * tgtd reads a block device through that device's own page cache (bs_rdwr is buffered),
 * so every machine's device would cache the image again on top of the shared origin.
 */
export async function chooseOverlayDriver(
  mode: OverlayDriverMode,
  settings: OverlayDriverSettings,
  targetDriver: string,
  logger: Logger,
): Promise<OverlayChoice> {
  let choice: { name: OverlayDriverName; reason: string };
  if (mode !== "auto") {
    choice = { name: mode, reason: "configured" };
  } else if (targetDriver !== "lio") {
    choice = {
      name: "reflink",
      reason: `auto: the target driver is ${targetDriver}, which caches each block device itself; dm-snapshot overlays need LIO`,
    };
  } else {
    const probe = DRIVERS["dm-snapshot"](settings, logger);
    const problem = await probe.check().then(
      () => undefined,
      (err: unknown) => errorText(err),
    );
    choice =
      problem === undefined
        ? {
            name: "dm-snapshot",
            reason:
              "auto: LIO with device-mapper snapshots and loop devices: every machine shares the image's page cache",
          }
        : { name: "reflink", reason: `auto: ${problem}` };
  }
  const driver = DRIVERS[choice.name](settings, logger);
  logger.info({ driver: choice.name, reason: choice.reason }, "overlay driver selected");
  return { driver, reason: choice.reason };
}

/** Builds the configured overlay driver (its check() is the caller's to run). */
export function selectOverlayDriver(
  name: OverlayDriverName,
  settings: OverlayDriverSettings,
  logger: Logger,
): OverlayDriver {
  const driver = DRIVERS[name](settings, logger);
  logger.info({ driver: name, reason: "configured" }, "overlay driver selected");
  return driver;
}
