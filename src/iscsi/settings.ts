import type { OverlayDriverMode, OverlayDriverSettings } from "./overlay/select.js";

/**
 * Everything the iSCSI room needs from outside, as plain values: the daemon maps its
 * configuration (and what it knows of its own privileges) onto this.
 */
export interface IscsiSettings extends OverlayDriverSettings {
  /** "auto": LIO when its configfs is there (or appears after modprobe), else tgt. */
  targetDriver: "auto" | "lio" | "tgt";
  /** "auto": dm-snapshot with LIO where the kernel has it, else reflink. */
  overlayDriver: OverlayDriverMode;
  /** Where initiators log in; a target row's own portal, when set, wins. */
  portal: { address: string; port: number };
  /** Only targets under this prefix are listed or touched. */
  iqnPrefix: string;
  tgt: { controlPort: number; confDir: string };
  lio: { saveconfigPath: string };
  /**
   * Boot-set warming (dm-snapshot only): at most this many bytes of each current version's
   * recorded boot set are read into the page cache at start and when a version becomes
   * current; 0 turns it off.
   */
  warmMaxBytes: number;
  /** How often sessions are polled (and, every twelfth time, overlay usage). */
  sessionPollMs: number;
  /** True when the daemon may load LIO's kernel modules (it runs as root). */
  mayLoadModules: boolean;
  /** `[storage] reserve_percent`: new drafts and reset overlays are refused below it. */
  reservePercent?: number;
}
