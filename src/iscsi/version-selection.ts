import type { Store } from "../store/index.js";
import type { Target } from "../store/targets.js";

/** Which image version a target's system disk serves, and from which overlay. */
export interface SystemDisk {
  /** The overlay the system LUN serves: the target's own, or the open update's draft. */
  overlayId: string;
  /** The version file (or LV) the overlay is (or will be) cloned from. */
  imagePath: string;
  version: number;
  /** Set when the machine is the super-client of an open update of its image. */
  draftUpdateId?: number;
}

/**
 * The one decision which version a machine boots. The super-client of an open update
 * boots the update's draft (a writable overlay of the update's base version); every other
 * machine boots the version its target pins, or the image's current version.
 * Returns a reason string when there is nothing to boot.
 */
export function selectSystemDisk(
  store: Store,
  target: Target,
  ownOverlayId: string,
): SystemDisk | string {
  const image = store.images.get(target.system_image_id);
  if (image?.status !== "ready" || image.current_version === null) {
    return `system image ${target.system_image_id} has no ready version`;
  }
  const pathOf = versionPaths(store, image.id);
  const draft = draftOf(store, target, image, pathOf);
  if (draft !== undefined) return draft;
  const wanted = target.system_image_version ?? image.current_version;
  const path = pathOf(wanted);
  if (!path) {
    return target.system_image_version !== null
      ? `target ${target.name} pins version ${wanted} of image ${image.name}, which does not exist`
      : `image ${image.name} has no file for its current version ${wanted}`;
  }
  return { overlayId: ownOverlayId, imagePath: path, version: wanted };
}

/** How many versions of its image were made after the one a target's overlay was cloned from. */
export function versionsBehind(store: Store, target: Target): number {
  if (target.overlay_version === null) return 0;
  const image = store.images.get(target.system_image_id);
  const wanted = target.system_image_version ?? image?.current_version ?? null;
  if (wanted === null || wanted <= target.overlay_version) return 0;
  return store.images
    .versions(target.system_image_id)
    .filter((v) => v.version > target.overlay_version! && v.version <= wanted).length;
}

/** Which version a target's extra disk (games or data) serves, and how. */
export interface ExtraDisk {
  /** The overlay the extra LUN serves; undefined: the version's file itself, shared read-only. */
  overlayId: string | undefined;
  imagePath: string;
  version: number;
  /** Set when the machine is the super-client of an open update of the extra image. */
  draftUpdateId?: number;
}

/**
 * The extra disk's counterpart of selectSystemDisk. The super-client of an open update of
 * the extra image gets the update's writable draft (a games disk too). Otherwise a data
 * disk is the machine's own overlay and a games disk the version's file, read-only: the
 * version it already serves (targets.extra_overlay_version, so a commit never swaps the
 * games disk under a running PC), or the current one when it has none or `fresh`.
 */
export function selectExtraDisk(
  store: Store,
  target: Target,
  ownOverlayId: string,
  fresh = false,
): ExtraDisk | string {
  const imageId = target.extra_disk_image_id;
  if (imageId === null) return `target ${target.name} has no extra disk`;
  const image = store.images.get(imageId);
  if (image?.status !== "ready" || image.current_version === null) {
    return `extra disk image ${imageId} has no ready version`;
  }
  const pathOf = versionPaths(store, image.id);
  const draft = draftOf(store, target, image, pathOf);
  if (draft !== undefined) return draft;
  const served = fresh ? null : target.extra_overlay_version;
  const wanted = served !== null && pathOf(served) ? served : image.current_version;
  const path = pathOf(wanted);
  if (!path) return `image ${image.name} has no file for its current version ${wanted}`;
  return {
    overlayId: target.target_type === "system_data" ? ownOverlayId : undefined,
    imagePath: path,
    version: wanted,
  };
}

/** The file of each version of an image, by version number. */
function versionPaths(store: Store, imageId: number): (version: number) => string | undefined {
  const versions = store.images.versions(imageId);
  return (v) => versions.find((x) => x.version === v)?.path;
}

/**
 * The draft of an open update of the image when the target's machine is its super-client:
 * a writable overlay of the update's base version. Undefined when there is no such update.
 */
function draftOf(
  store: Store,
  target: Target,
  image: { id: number; name: string },
  pathOf: (version: number) => string | undefined,
): Required<SystemDisk> | string | undefined {
  const update = store.imageUpdates.openOnMachine(target.machine_id, image.id);
  if (!update) return undefined;
  const path = pathOf(update.base_version);
  if (!path)
    return `version ${update.base_version} of image ${image.name} (the update's base) is gone`;
  return {
    overlayId: update.draft_overlay,
    imagePath: path,
    version: update.base_version,
    draftUpdateId: update.id,
  };
}
