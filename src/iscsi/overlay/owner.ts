/**
 * Who an overlay belongs to, recorded with the overlay itself (a sidecar file for reflink,
 * LV tags for lvm-thin) so that a driver can tell, without the database, whether the disk
 * it is asked to serve is really the one it made for this target.
 */
export interface OverlayOwner {
  targetId: number;
  machineId: number;
  imageId: number;
  /** The image version it was cloned from; recorded, not compared (updates move versions). */
  imageVersion: number | null;
}

/** Why a recorded owner is not the one asking, or undefined when it is. */
export function ownerMismatch(recorded: OverlayOwner, wanted: OverlayOwner): string | undefined {
  const diffs: string[] = [];
  if (recorded.targetId !== wanted.targetId)
    diffs.push(`target ${recorded.targetId}, not ${wanted.targetId}`);
  if (recorded.machineId !== wanted.machineId)
    diffs.push(`machine ${recorded.machineId}, not ${wanted.machineId}`);
  if (recorded.imageId !== wanted.imageId)
    diffs.push(`image ${recorded.imageId}, not ${wanted.imageId}`);
  return diffs.length ? `it was made for ${diffs.join(", ")}` : undefined;
}

export function parseOwner(value: unknown): OverlayOwner | undefined {
  const o = value as Partial<OverlayOwner> | null;
  if (
    !o ||
    !Number.isInteger(o.targetId) ||
    !Number.isInteger(o.machineId) ||
    !Number.isInteger(o.imageId)
  )
    return undefined;
  return {
    targetId: o.targetId!,
    machineId: o.machineId!,
    imageId: o.imageId!,
    imageVersion: Number.isInteger(o.imageVersion) ? o.imageVersion! : null,
  };
}

/** An overlay set aside instead of deleted: kept until an admin deletes it. */
export interface QuarantinedOverlay {
  /** The name to delete it by (unique, safe in a URL path). */
  name: string;
  /** The overlay id it had. */
  overlayId: string;
  reason: string;
  quarantinedAt: string;
  sizeBytes: number;
  owner?: OverlayOwner;
}

/** A quarantine name: the overlay id and when, safe as a file name, LV name and URL segment. */
export function quarantineName(overlayId: string, at: Date): string {
  return `${overlayId}.q${at.toISOString().replace(/[-:.]/g, "")}`;
}

const QUARANTINE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.q\d{8}T\d{9}Z$/;

export function isQuarantineName(name: string): boolean {
  return QUARANTINE_NAME.test(name) && !name.includes("..");
}
