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
        throw refusal(err, targetId);
      }
    },
    retarget: (machineId) => reconciler.retarget(machineId),
    cloneOverlay: async (targetId, name, refuseLive) => {
      if (!overlays.freezeVersion) {
        throw new VersionError(
          "unavailable",
          `the ${overlays.name} overlay driver cannot clone overlays`,
        );
      }
      try {
        const ref = await reconciler.cloneSystemOverlay(targetId, name, refuseLive);
        return { path: ref.path, sizeBytes: ref.sizeBytes };
      } catch (err) {
        throw refusal(err, targetId);
      }
    },
    restoreOverlay: async (targetId, path, version) => {
      try {
        await reconciler.restoreSystemOverlay(targetId, path, version);
      } catch (err) {
        throw refusal(err, targetId);
      }
    },
    collectGarbage: () => reconciler.collectGarbage(),
  };

  /** The reconciler's refusals, as the update cycle's errors. */
  function refusal(err: unknown, targetId: number): unknown {
    if (err instanceof LiveSessionError) {
      const t = store.targets.get(targetId);
      return new VersionError("live_session", err.message, {
        machine_id: t?.machine_id ?? null,
        session_id: err.sessionId ?? null,
      });
    }
    if (err instanceof ReserveError) {
      return new VersionError("insufficient_space", `a fresh overlay is refused: ${err.message}`);
    }
    return err;
  }
}
