export { errnoCode, OverlayError, type OverlayErrorCode } from "./errors.js";
export {
  type ExtentSummary,
  type FiemapExtent,
  parseXfsIoFiemap,
  summarizeExtents,
} from "./fiemap.js";
export { fileSystemType } from "./fstype.js";
export {
  createLvmThinDriver,
  type LvmThinDriverOptions,
  type LvRow,
  parseLvsReport,
} from "./lvm-thin.js";
export { validateLvName, validateOverlayId, validateVgName } from "./names.js";
export { createReflinkDriver, REFLINK_FIX, type ReflinkDriverOptions } from "./reflink.js";
export { CommandError, type CommandResult, type CommandRunner, execFileRunner } from "./run.js";
export type {
  OverlayDriver,
  OverlayDriverName,
  OverlayRef,
  OverlayUsage,
} from "./types.js";
