import type { Location } from "../store/locations.js";
import type { Machine } from "../store/machines.js";

/**
 * The longest a boot menu may wait. Its entries are script URLs with a binding token
 * valid 5 minutes (script/token.ts): a longer wait would let the default entry's URL
 * expire before it is chained.
 */
export const MENU_TIMEOUT_MAX_SECONDS = 240;

export type SettingSource = "machine" | "location" | "global";

/** How a machine's boot menu behaves, and where each setting came from. */
export interface MenuSettings {
  timeoutSeconds: number;
  timeoutFrom: SettingSource;
  localDisk: boolean;
  localDiskFrom: SettingSource;
  /** The target the menu starts on, when the machine names one. */
  defaultTargetId: number | null;
}

/**
 * Machine, else its room, else the global setting: a room sets the habit of a lab (a
 * short wait, or a local-disk entry for the PCs that also have Windows on their disk),
 * and one PC can differ. NULL means "not set here". There is no global local-disk entry:
 * offering the local disk is a decision about particular PCs.
 */
export function menuSettings(
  machine: Pick<Machine, "menu_timeout_seconds" | "menu_local_disk" | "default_target_id">,
  location: Pick<Location, "menu_timeout_seconds" | "menu_local_disk"> | undefined,
  globalTimeoutSeconds: number,
): MenuSettings {
  const timeout: [number, SettingSource] =
    machine.menu_timeout_seconds !== null
      ? [machine.menu_timeout_seconds, "machine"]
      : location && location.menu_timeout_seconds !== null
        ? [location.menu_timeout_seconds, "location"]
        : [globalTimeoutSeconds, "global"];
  const local: [boolean, SettingSource] =
    machine.menu_local_disk !== null
      ? [machine.menu_local_disk === 1, "machine"]
      : location && location.menu_local_disk !== null
        ? [location.menu_local_disk === 1, "location"]
        : [false, "global"];
  return {
    timeoutSeconds: timeout[0],
    timeoutFrom: timeout[1],
    localDisk: local[0],
    localDiskFrom: local[1],
    defaultTargetId: machine.default_target_id,
  };
}
