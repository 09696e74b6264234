import { stat } from "node:fs/promises";
import type { Logger } from "pino";
import type { CommandRunner } from "../../host/exec.js";
import { errorText } from "../../lib/error-text.js";
import { DEFAULT_CONFIGFS_ROOT } from "./lio.js";
import type { TargetDriver } from "./types.js";

export interface SelectTargetDriverOptions {
  mode: "auto" | "lio" | "tgt";
  logger: Logger;
  lio: () => TargetDriver;
  tgt: () => TargetDriver;
  configfsRoot?: string;
  /** Runs modprobe when LIO's configfs is absent; omit to never load modules. */
  run?: CommandRunner;
}

const LIO_MODULES = [
  "target_core_mod",
  "iscsi_target_mod",
  "target_core_file",
  "target_core_iblock",
];

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/**
 * "auto" takes LIO when its configfs is there, or appears once its modules are loaded,
 * and tgt otherwise. The choice and its reason go to the log once.
 */
export async function selectTargetDriver(o: SelectTargetDriverOptions): Promise<TargetDriver> {
  const root = o.configfsRoot ?? DEFAULT_CONFIGFS_ROOT;
  if (o.mode === "lio" || o.mode === "tgt") {
    o.logger.info({ driver: o.mode, reason: "configured" }, "iSCSI target driver selected");
    return o.mode === "lio" ? o.lio() : o.tgt();
  }
  if (await isDir(root)) {
    o.logger.info({ driver: "lio", reason: `${root} present` }, "iSCSI target driver selected");
    return o.lio();
  }
  let modprobe = "not tried";
  if (o.run) {
    try {
      await o.run("modprobe", ["-a", ...LIO_MODULES]);
      modprobe = "loaded";
    } catch (err) {
      modprobe = `failed: ${errorText(err)}`;
    }
    if (await isDir(root)) {
      o.logger.info(
        { driver: "lio", reason: `${root} present after modprobe` },
        "iSCSI target driver selected",
      );
      return o.lio();
    }
  }
  o.logger.info(
    { driver: "tgt", reason: `${root} absent; modprobe ${modprobe}` },
    "iSCSI target driver selected",
  );
  return o.tgt();
}
