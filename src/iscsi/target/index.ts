export { type CommandRunner, execRunner } from "./exec.js";
export { LioDriver, type LioDriverOptions } from "./lio.js";
export { type ConfigFs, nodeConfigFs } from "./lio-configfs.js";
export { type SelectTargetDriverOptions, selectTargetDriver } from "./select.js";
export { TgtDriver, type TgtDriverOptions } from "./tgt.js";
export type {
  AclSpec,
  LunSpec,
  RemoveOptions,
  TargetDriver,
  TargetSession,
  TargetSpec,
} from "./types.js";
export { TargetError } from "./types.js";
export { isValidInitiatorName, isValidIqn, specProblems } from "./validate.js";
