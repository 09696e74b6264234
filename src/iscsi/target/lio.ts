import type { Logger } from "pino";
import { redact } from "../../host/exec.js";
import { errorText } from "../../lib/error-text.js";
import { Serial } from "../../lib/keyed-lock.js";
import {
  applyToConfigfs,
  type ConfigFs,
  listConfigfsTargets,
  nodeConfigFs,
  readConfigfsSessions,
  removeFromConfigfs,
} from "./lio-configfs.js";
import { ConfigfsIndex } from "./lio-index.js";
import { readLioIo } from "./lio-io.js";
import { mergeTarget, readSaveConfig, removeTarget, updateSaveConfig } from "./lio-saveconfig.js";
import {
  type RemoveOptions,
  type TargetDriver,
  TargetError,
  type TargetIo,
  type TargetSession,
  type TargetSpec,
} from "./types.js";
import { isUnderPrefix, isValidIqn, secretsOf, specProblems } from "./validate.js";

export const DEFAULT_CONFIGFS_ROOT = "/sys/kernel/config/target";
export const DEFAULT_SAVECONFIG = "/etc/rtslib-fb-target/saveconfig.json";

export interface LioDriverOptions {
  iqnPrefix: string;
  logger: Logger;
  /** configfs target root; a temp folder in tests. */
  configfsRoot?: string;
  /** rtslib's saveconfig.json, which `targetctl restore` loads at boot of the server. */
  saveconfigPath?: string;
  fs?: ConfigFs;
}

/**
 * Linux LIO: each change goes to configfs for the one target (live, no other target
 * touched), then into saveconfig.json so the next boot of the server restores it.
 */
export class LioDriver implements TargetDriver {
  readonly name = "lio" as const;
  readonly firstLun = 0 as const;
  readonly #root: string;
  readonly #save: string;
  readonly #fs: ConfigFs;
  readonly #prefix: string;
  readonly #log: Logger;
  readonly #serial = new Serial();
  /**
   * HBAs, storage objects and LUN links, kept across calls (under #serial) so that an
   * apply or a removal touches its own target's entries, not every target's. Empty at
   * construction: the first call builds it from configfs, which is how a restarted daemon
   * adopts what the kernel kept.
   */
  readonly #index: ConfigfsIndex;

  constructor(o: LioDriverOptions) {
    this.#root = o.configfsRoot ?? DEFAULT_CONFIGFS_ROOT;
    this.#save = o.saveconfigPath ?? DEFAULT_SAVECONFIG;
    this.#fs = o.fs ?? nodeConfigFs;
    this.#prefix = o.iqnPrefix;
    this.#log = o.logger;
    this.#index = new ConfigfsIndex(this.#fs, this.#root);
  }

  apply(spec: TargetSpec): Promise<void> {
    const problems = specProblems(spec, this.firstLun);
    if (problems.length > 0)
      return Promise.reject(new TargetError(spec.iqn, `invalid spec: ${problems.join("; ")}`));
    if (!isUnderPrefix(spec.iqn, this.#prefix))
      return Promise.reject(
        new TargetError(spec.iqn, `is not under this driver's prefix ${this.#prefix}`),
      );
    return this.#serial.run(async () => {
      const secrets = secretsOf(spec);
      let changes: string[];
      try {
        changes = await applyToConfigfs(this.#fs, this.#root, spec, this.#index);
      } catch (err) {
        throw new TargetError(spec.iqn, `configfs: ${redact(errorText(err), secrets)}`, {
          cause: err,
        });
      }
      try {
        await updateSaveConfig(this.#save, (c) => mergeTarget(c, spec));
      } catch (err) {
        throw new TargetError(spec.iqn, `${this.#save}: ${redact(errorText(err), secrets)}`, {
          cause: err,
        });
      }
      if (changes.length > 0) this.#log.info({ iqn: spec.iqn, changes }, "lio target applied");
      else this.#log.debug({ iqn: spec.iqn }, "lio target already as specified");
    });
  }

  remove(iqn: string, options: RemoveOptions = {}): Promise<void> {
    if (!isValidIqn(iqn) || !isUnderPrefix(iqn, this.#prefix))
      return Promise.reject(new TargetError(iqn, `is not a target under ${this.#prefix}`));
    return this.#serial.run(async () => {
      const sessions = await readConfigfsSessions(this.#fs, this.#root, iqn);
      if (sessions.length > 0 && !options.force) {
        const who = sessions.map((s) => s.initiatorIqn).join(", ");
        throw new TargetError(iqn, `has logged-in sessions (${who}); not removing without force`);
      }
      let wasLive: boolean;
      try {
        wasLive = await removeFromConfigfs(this.#fs, this.#root, iqn, this.#index);
      } catch (err) {
        throw new TargetError(iqn, `configfs: ${errorText(err)}`, { cause: err });
      }
      try {
        await updateSaveConfig(this.#save, (c) => removeTarget(c, iqn));
      } catch (err) {
        throw new TargetError(iqn, `${this.#save}: ${errorText(err)}`, { cause: err });
      }
      this.#log.info({ iqn, wasLive }, "lio target removed");
    });
  }

  async list(): Promise<string[]> {
    const live = await listConfigfsTargets(this.#fs, this.#root);
    const saved = ((await readSaveConfig(this.#save)).targets ?? []).map((t) => t.wwn);
    return [...new Set([...live, ...saved])]
      .filter((iqn) => typeof iqn === "string" && isUnderPrefix(iqn, this.#prefix))
      .sort();
  }

  sessions(iqn: string): Promise<TargetSession[]> {
    return readConfigfsSessions(this.#fs, this.#root, iqn);
  }

  io(iqn: string): Promise<TargetIo> {
    return readLioIo(this.#fs, this.#root, iqn);
  }
}
