import { VersionError } from "../images/version-errors.js";
import type { VersionStorage } from "../images/versions.js";
import type { Store } from "../store/index.js";
import type { OverlayDriver } from "./overlay/types.js";
import { LiveSessionError, type Reconciler, ReserveError } from "./reconciler.js";

/**
 * The update cycle's disk work on this room's drivers: drafts are overlays, versions are
 * frozen overlays (reflink clones or thin snapshots), resets go through the reconciler so
 * they never interleave with a boot of the same machine.
 */
export function versionStorage(
  reconciler: Reconciler,
  overlays: OverlayDriver,
  store: Store,
): VersionStorage {
  return {
    freeze: async (draft, name) => {
      if (!overlays.freezeVersion) {
        throw new VersionError(
          "unavailable",
          `the ${overlays.name} overlay driver cannot make image versions`,
        );
      }
      const ref = await overlays.freezeVersion(draft, name);
      return { path: ref.path, sizeBytes: ref.sizeBytes };
    },
    deleteDraft: (draft) => overlays.delete(draft),
    deleteVersion: async (path) => {
      await overlays.deleteVersion?.(path);
    },
    isLive: (target) => reconciler.liveSession(target),
    resetTarget: async (targetId) => {
      try {
        await reconciler.resetTarget(targetId);
      } catch (err) {
        if (err instanceof LiveSessionError) {
          const t = store.targets.get(targetId);
          throw new VersionError("live_session", err.message, {
            machine_id: t?.machine_id ?? null,
            session_id: err.sessionId ?? null,
          });
        }
        if (err instanceof ReserveError) {
          throw new VersionError(
            "insufficient_space",
            `a fresh overlay is refused: ${err.message}`,
          );
        }
        throw err;
      }
    },
    retarget: (machineId) => reconciler.retarget(machineId),
  };
}
