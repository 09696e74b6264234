import type { RunOptions } from "../../host/exec.js";
import type { OverlayOwner, QuarantinedOverlay } from "./owner.js";

/** A machine's private writable disk, as a target driver needs to serve it. */
export interface OverlayRef {
  /** "file" for a fileio backstore (reflink), "block" for a block device (lvm-thin, dm-snapshot). */
  kind: "file" | "block";
  path: string;
  sizeBytes: number;
}

/** What create() did when the overlay under that id was someone else's. */
export interface OverlayReplaced {
  /** The quarantine name the other overlay was moved to. */
  quarantinedAs: string;
  reason: string;
}

/** The result of create(): the overlay, and whether an overlay of someone else was set aside. */
export type CreatedOverlay = OverlayRef & { replaced?: OverlayReplaced };

export interface OverlayUsage {
  /** Space the overlay holds, including what it still shares with its image. */
  allocatedBytes: number;
  /** Space only this overlay holds: what its machine wrote. Absent when the driver cannot tell. */
  uniqueBytes?: number;
}

export type OverlayDriverName = "reflink" | "lvm-thin" | "dm-snapshot";

export interface OverlayDriver {
  readonly name: OverlayDriverName;
  /** Refuses early, with an error that says what to fix, when the driver cannot work here. */
  check(): Promise<void>;
  /**
   * Idempotent: an existing overlay is kept as it is, with the machine's writes, when it
   * belongs to `owner` (or records no owner: made before owners were recorded, adopted and
   * recorded now). An existing overlay recorded for another target, machine or image is
   * never served: it is quarantined and a fresh one made (`replaced` says so).
   */
  create(imagePath: string, overlayId: string, owner?: OverlayOwner): Promise<CreatedOverlay>;
  /**
   * Throws the machine's writes away: a fresh clone replaces the old overlay atomically.
   * The caller must first make sure no session is using the overlay.
   */
  reset(imagePath: string, overlayId: string, owner?: OverlayOwner): Promise<OverlayRef>;
  /**
   * Sets an overlay aside instead of deleting it (no target wants it, or it is not the
   * asker's): its bytes are kept, listed by quarantined(), until an admin deletes it.
   * Returns the quarantine name, or undefined when there was no such overlay.
   */
  quarantine(overlayId: string, reason: string): Promise<string | undefined>;
  quarantined(): Promise<QuarantinedOverlay[]>;
  /** Deletes one quarantined overlay for good; false when there is none by that name. */
  deleteQuarantined(name: string): Promise<boolean>;
  /** Idempotent: deleting a missing overlay succeeds. */
  delete(overlayId: string): Promise<void>;
  usage(overlayId: string): Promise<OverlayUsage>;
  /**
   * usage() of many overlays at once, where the driver can read them in one go (reflink: one
   * xfs_io for all files instead of one process each; a fork of the daemon blocks its event
   * loop, so 100 of them in a row delayed every DHCP and script answer of a boot storm).
   * Overlays that do not exist are left out of the map.
   */
  usageAll?(overlayIds: readonly string[]): Promise<Map<string, OverlayUsage>>;
  /** Ids of the overlays that exist, sorted, so a reconciler can find orphans. */
  list(): Promise<string[]>;
  /**
   * Image versions (absent when the driver cannot make them). freezeVersion clones an
   * overlay's present content into a new immutable image named `name`, in constant time
   * (a reflink or a thin snapshot, never a copy); the overlay itself is left as it is.
   */
  freezeVersion?(overlayId: string, name: string): Promise<OverlayRef>;
  /** Deletes an image made by freezeVersion (by its path); idempotent. */
  deleteVersion?(path: string): Promise<void>;
  /**
   * Called before a machine boots from this overlay: the driver may record the reads of
   * the boot as its image version's boot set (dm-snapshot, when the version has none).
   * Resolves true when a recording started; never rejects.
   */
  recordBootSet?(overlayId: string): Promise<boolean>;
  /** Ends what the driver runs in the background (a daemon stop). */
  close?(): Promise<void>;
}

/**
 * How overlay drivers run lvm and xfs_io: a command that hangs (an LVM lock, a stuck
 * device) is killed after two minutes, and a fragmented 100 GB overlay's extent map
 * (several MB) still fits.
 */
export const OVERLAY_COMMANDS: RunOptions = {
  timeoutMs: 120_000,
  killGraceMs: 0,
  maxOutputChars: 256 * 1024 * 1024,
};
