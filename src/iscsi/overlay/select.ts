import type { Logger } from "pino";
import { createLvmThinDriver } from "./lvm-thin.js";
import { createReflinkDriver } from "./reflink.js";
import type { OverlayDriver, OverlayDriverName } from "./types.js";

/** What any overlay driver may need; each takes its part. */
export interface OverlayDriverSettings {
  /** Folder of overlay files (reflink). */
  overlaysDir: string;
  /** Folder of the image files, which overlays are cloned from (reflink). */
  imagesDir: string;
  /** Volume group of the images' thin pool (lvm-thin). */
  lvmVolumeGroup: string;
}

type Factory = (s: OverlayDriverSettings, logger: Logger) => OverlayDriver;

// Adding a driver: its file, its name in OverlayDriverName, and one line here.
const DRIVERS: Record<OverlayDriverName, Factory> = {
  reflink: (s, logger) =>
    createReflinkDriver({ dir: s.overlaysDir, imageDir: s.imagesDir, logger }),
  "lvm-thin": (s, logger) => createLvmThinDriver({ vg: s.lvmVolumeGroup, logger }),
};

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
