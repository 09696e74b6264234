import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import type { Logger } from "pino";
import type { EventBus } from "../events/bus.js";
import { errorText } from "../lib/error-text.js";
import { KeyedLock } from "../lib/keyed-lock.js";
import type { BootfleetMetrics } from "../metrics/bootfleet.js";
import type { SanbootData } from "../netboot/script/kinds.js";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import type { BootSession } from "../store/sessions.js";
import type { Target } from "../store/targets.js";
import { followLogin } from "./boot-logins.js";
import { chapSecret } from "./identity.js";
import type { OverlayOwner, QuarantinedOverlay } from "./overlay/owner.js";
import type { CreatedOverlay, OverlayDriver, OverlayRef, OverlayUsage } from "./overlay/types.js";
import type { LunSpec, TargetDriver, TargetSession, TargetSpec } from "./target/types.js";
import {
  type ExtraDisk,
  type SystemDisk,
  selectExtraDisk,
  selectSystemDisk,
} from "./version-selection.js";

export interface ReconcilerDeps {
  store: Store;
  targets: TargetDriver;
  overlays: OverlayDriver;
  log: Logger;
  /** The file (or LV) of an image's current version; undefined when it has none ready. */
  imagePath(imageId: number): string | undefined;
  portal: { address: string; port: number };
  clock?: () => number;
  /** session_started / session_stopped for the API's event streams. */
  bus?: EventBus;
  metrics?: BootfleetMetrics;
  /**
   * The free-space reserve: refuses a new draft or a reset overlay when the overlay file
   * system is below it (the reason names it). Absent: not checked.
   */
  reserve?: () => Promise<{ ok: boolean; reason?: string }>;
}

/** A reset refused because the machine is running: its session is named. */
export class LiveSessionError extends Error {
  override name = "LiveSessionError";
  constructor(
    readonly machineName: string,
    readonly sessionId: string | undefined,
  ) {
    super(
      `machine ${machineName} has a live iSCSI session${sessionId ? ` (${sessionId})` : ""}: shut it down first`,
    );
  }
}

/** A new overlay refused by the free-space reserve. */
export class ReserveError extends Error {
  override name = "ReserveError";
}

/** What the start-up sweep and later sweeps set aside instead of destroying. */
export interface Quarantine {
  overlays: QuarantinedOverlay[];
  /** Targets under our prefix that no database row names: left running, never torn down. */
  unknown_targets: string[];
}

export type Prepared = { ok: true; data: SanbootData } | { ok: false; reason: string };

/** The overlay of a target's system disk and of its extra disk. Ids are ours alone. */
export const systemOverlayId = (targetId: number) => `t${targetId}-system`;
export const extraOverlayId = (targetId: number) => `t${targetId}-extra`;
const OVERLAY_ID = /^t(\d+)-(system|extra)$/;
/** How long a machine's last boot must have ended before its next secret is made ready. */
export const IDLE_BEFORE_FRESH_MS = 10 * 60_000;
/** No pass over machines that are off while any machine started a boot this recently. */
export const ROOM_QUIET_MS = 60_000;

/**
 * Desired state (the store) → running state (the target and overlay drivers), one
 * machine at a time. Idempotent: applying a machine twice changes nothing the second
 * time. A failure is recorded on that machine and its target (status `error` with the
 * reason) and never stops the others. Calls for one machine are serialised, so a change
 * through the API and a boot of the same machine never interleave.
 */
export class Reconciler {
  private readonly perMachine = new KeyedLock<number>();
  private readonly clock: () => number;
  /**
   * Per target: the secret a pass over machines that are off made ready for their next
   * boot (freshenIdle), never handed out yet. Memory only: after a restart each boot
   * gets a new secret as usual.
   */
  private readonly fresh = new Map<number, string>();
  /**
   * Target ids and IQNs this process has seen in the store: when one of them disappears,
   * an admin deleted it, and its overlay and target go. What was never seen (a start on an
   * empty or older database) is set aside instead: an overlay is a machine's disk.
   */
  private readonly knownTargetIds = new Set<number>();
  private readonly knownIqns = new Set<string>();
  private readonly unknownIqns = new Set<string>();

  constructor(private readonly d: ReconcilerDeps) {
    this.clock = d.clock ?? Date.now;
  }

  /** Applies one machine's targets; removes what no longer belongs to any target. */
  reconcileMachine(machineId: number): Promise<void> {
    return this.perMachine.run(machineId, async () => {
      const machine = this.d.store.machines.get(machineId);
      const targets = machine ? this.d.store.targets.forMachine(machineId) : [];
      for (const target of targets) {
        if (target.is_active === 1) await this.applyTarget(machine!, target);
      }
      // A deleted machine or target leaves running targets behind: sweep them.
      await this.removeOrphans(false);
    });
  }

  /**
   * A verified boot of the machine, before its sanboot script is served: the boot route
   * calls this only once the peer proved to be the machine itself (netboot/peer-binding.ts)
   * with a script URL not used before, never for a DHCP packet that merely names it.
   * - The CHAP secret (and the mutual one) is new, stored, and applied to the target
   *   before the script that carries it leaves: a secret stolen from an earlier boot opens
   *   nothing now. The drivers change it in place (tgt's account, LIO's ACL attribute), so
   *   a session logged in with the old one stays up.
   * - A reset-on-reboot machine gets a fresh overlay. The machine is in its firmware asking
   *   for its script, so any session its initiator still has is the dead one of its
   *   previous boot, and the target is removed under it.
   */
  prepareSanboot(machine: Machine, target: Target): Promise<Prepared> {
    return this.perMachine.run(machine.id, async () => {
      try {
        // A secret made while the machine was off and never handed out is this boot's:
        // nothing to change in the target server before the script leaves.
        const fresh = this.madeReady(target);
        this.fresh.delete(target.id);
        if (fresh)
          this.d.log.debug({ iqn: target.iqn }, "boot takes the secret made ready while off");
        let current = fresh ? target : this.rotateChap(target);
        const drafts = await this.prepareDrafts(current);
        // A games disk moves to the current version at a boot, never under a running PC.
        const games = await this.refreshGamesDisk(current);
        current = this.d.store.targets.get(current.id) ?? current;
        if (machine.overlay_policy === "reset") await this.resetOverlays(current);
        else if (drafts.length || games) await this.takeDown(current);
        const spec = await this.applyTarget(machine, this.d.store.targets.get(current.id)!);
        if (spec) for (const id of drafts) this.d.store.imageUpdates.markBooted(id);
        if (spec) await this.recordBootSets(this.d.store.targets.get(current.id) ?? current);
        if (!spec)
          return {
            ok: false,
            reason: this.d.store.targets.get(target.id)?.status_reason ?? "failed",
          };
        return { ok: true, data: this.sanbootData(machine, current, spec) };
      } catch (err) {
        const reason = errorText(err);
        this.markError(machine.id, target.id, reason);
        return { ok: false, reason };
      }
    });
  }

  /**
   * Lets the overlay driver record this boot's reads as the boot set of the versions it
   * boots (dm-snapshot, for a version that has none yet: warm.ts then warms it). Awaited,
   * so the boot's first reads are counted; a draft is not a version anyone else boots.
   */
  private async recordBootSets(target: Target): Promise<void> {
    const record = this.d.overlays.recordBootSet?.bind(this.d.overlays);
    if (!record) return;
    try {
      const system = this.systemDisk(target);
      if (system.draftUpdateId === undefined) await record(system.overlayId);
      if (target.extra_disk_image_id !== null) {
        const extra = this.extraDisk(target);
        if (extra.draftUpdateId === undefined && extra.overlayId !== undefined) {
          await record(extra.overlayId);
        }
      }
    } catch (err) {
      // Only a warming optimisation is lost: the boot goes on.
      this.d.log.warn({ iqn: target.iqn, err: errorText(err) }, "boot set not recorded");
    }
  }

  /**
   * An operator's reset: the machine's overlays go back to a fresh clone of their image.
   * Refused while its initiator is logged in: the running PC would lose its disk.
   */
  resetMachineOverlays(machineId: number): Promise<void> {
    return this.perMachine.run(machineId, async () => {
      const machine = this.d.store.machines.get(machineId);
      if (!machine) throw new Error(`machine ${machineId} does not exist`);
      const targets = this.d.store.targets.forMachine(machineId).filter((t) => t.is_active === 1);
      if (!targets.length) throw new Error(`${machine.name} has no active iSCSI target`);
      for (const target of targets) {
        const live = await this.d.targets.sessions(target.iqn);
        if (live.some((x) => x.initiatorIqn === target.initiator_iqn)) {
          throw new Error(`${machine.name} is logged in to ${target.iqn}: power it off first`);
        }
      }
      for (const target of targets) {
        await this.resetOverlays(target);
        await this.applyTarget(machine, target);
      }
    });
  }

  /** At daemon start: adopt and repair every active target, then remove orphans. */
  async startup(): Promise<void> {
    const machineIds = [...new Set(this.d.store.targets.allActive().map((t) => t.machine_id))];
    for (const id of machineIds) {
      await this.perMachine.run(id, async () => {
        const machine = this.d.store.machines.get(id);
        if (!machine) return;
        for (const t of this.d.store.targets.forMachine(id)) {
          if (t.is_active === 1) await this.applyTarget(machine, t);
        }
      });
    }
    await this.removeOrphans(true);
    this.d.log.info(
      { machines: machineIds.length, driver: this.d.targets.name },
      "iSCSI targets reconciled",
    );
  }

  /**
   * Reads who is logged in and moves boot sessions along (boot-logins.ts): `active` at
   * login, ended with its duration when the initiator is gone, live again when the same
   * boot logs in again (the booted OS taking over its disk from iPXE).
   */
  async pollSessions(): Promise<void> {
    const targets = this.d.store.targets.allActive();
    // One read of every target's sessions when the driver can: per target, tgt answered
    // (and we parsed) the full listing N times a poll, which in a boot storm kept tgtd's
    // management socket and the event loop busy in front of the boots' own requests.
    let all: Map<string, TargetSession[]> | undefined;
    if (this.d.targets.allSessions && targets.length > 0) {
      try {
        all = await this.d.targets.allSessions();
      } catch (err) {
        this.d.log.debug({ err: errorText(err) }, "session poll failed");
        return;
      }
    }
    for (const target of targets) {
      let loggedIn: boolean;
      try {
        const sessions = all
          ? (all.get(target.iqn) ?? [])
          : await this.d.targets.sessions(target.iqn);
        loggedIn = sessions.some((s) => s.initiatorIqn === target.initiator_iqn);
      } catch (err) {
        this.d.log.debug({ iqn: target.iqn, err: errorText(err) }, "session poll failed");
        continue;
      }
      const change = followLogin(this.d.store, target, loggedIn, this.clock());
      if (!change) continue;
      const at = { machine_id: target.machine_id, iqn: target.iqn };
      const session = change.session;
      if (change.kind === "logout") {
        this.d.log.info(at, "iSCSI session ended");
        this.d.bus?.publish("session_stopped", {
          session_id: session.session_id,
          machine_id: target.machine_id,
          status: "stopped",
        });
        continue;
      }
      this.d.store.machines.update(target.machine_id, {
        last_seen: new Date(this.clock()).toISOString(),
      });
      if (change.kind === "relogin") {
        this.d.log.info(
          { ...at, session_id: session.session_id, logins: session.iscsi_logins },
          "iSCSI login again in the same boot: the booted OS took over its disk",
        );
      } else {
        this.d.log.info(
          { ...at, session_id: session.session_id, boot_seen: change.kind === "login" },
          "iSCSI session started",
        );
      }
    }
  }

  /**
   * Gives the machines that are off their next boot's CHAP secret now, where the target
   * driver has credentials ready for it (tgt's spare account: 2 requests), so that a boot
   * at 9 am takes a secret already applied and never handed out, and its script waits for
   * nothing in the target server. The secret of the machine's last boot opens nothing from
   * then on, as a boot would have done. Off: no login on the target, no boot in progress,
   * and the last one ended IDLE_BEFORE_FRESH_MS ago (a PC whose OS still runs and only lost
   * its session keeps its credentials that long). Skipped while any machine started a boot
   * in the last ROOM_QUIET_MS: not in a boot storm's way. Returns how many were made.
   */
  async freshenIdle(): Promise<number> {
    const ready = this.d.targets.readySecret?.bind(this.d.targets);
    const allSessions = this.d.targets.allSessions?.bind(this.d.targets);
    if (!ready || !allSessions) return 0;
    const now = this.clock();
    const latest = new Map(this.d.store.sessions.latestPerMachine().map((x) => [x.machine_id, x]));
    for (const x of latest.values()) if (now - Date.parse(x.started_at) < ROOM_QUIET_MS) return 0;
    let live: Map<string, TargetSession[]>;
    try {
      live = await allSessions();
    } catch (err) {
      this.d.log.debug({ err: errorText(err) }, "idle machines not read");
      return 0;
    }
    const off = (t: Target, last: BootSession | undefined) =>
      t.status === "active" &&
      (live.get(t.iqn) ?? []).length === 0 &&
      (!last ||
        (last.ended_at !== null && now - Date.parse(last.ended_at) >= IDLE_BEFORE_FRESH_MS));
    let made = 0;
    for (const target of this.d.store.targets.allActive()) {
      if (this.madeReady(target)) continue;
      if (target.mutual_chap_username) continue;
      if (!off(target, latest.get(target.machine_id))) continue;
      if (!ready(target.iqn, target.chap_username)) continue;
      const done = await this.perMachine.run(target.machine_id, async () => {
        // Again under the machine's lock: a boot may have begun meanwhile.
        const t = this.d.store.targets.get(target.id);
        const machine = this.d.store.machines.get(target.machine_id);
        const last = this.d.store.sessions.latestFor([target.machine_id]).get(target.machine_id);
        if (!t || !machine || t.is_active !== 1 || !off(t, last)) return false;
        const rotated = this.rotateChap(t);
        if (!(await this.applyTarget(machine, rotated))) return false;
        this.fresh.set(t.id, rotated.chap_password);
        return true;
      });
      if (done) made++;
    }
    if (made > 0)
      this.d.log.info(
        { machines: made },
        "next boot's CHAP secret made ready on machines that are off",
      );
    return made;
  }

  /** Whether the store's secret for the target is one freshenIdle made and no boot took yet. */
  private madeReady(target: Target): boolean {
    return this.fresh.get(target.id) === target.chap_password;
  }

  /** Records each overlay's usage on its target. */
  async recordUsage(): Promise<void> {
    const targets = this.d.store.targets.allActive();
    // One read for all overlays where the driver can (reflink: one xfs_io, not one each).
    let all: Map<string, OverlayUsage> | undefined;
    if (this.d.overlays.usageAll && targets.length > 0) {
      try {
        all = await this.d.overlays.usageAll(targets.map((t) => systemOverlayId(t.id)));
      } catch (err) {
        this.d.log.debug({ err: errorText(err) }, "overlay usage not read");
        return;
      }
    }
    for (const target of targets) {
      try {
        const id = systemOverlayId(target.id);
        const u = all ? all.get(id) : await this.d.overlays.usage(id);
        if (!u) continue;
        this.d.store.targets.update(target.id, {
          overlay_allocated_bytes: u.allocatedBytes,
          overlay_unique_bytes: u.uniqueBytes ?? null,
          overlay_usage_at: new Date(this.clock()).toISOString(),
        });
      } catch (err) {
        this.d.log.debug({ target: target.id, err: errorText(err) }, "overlay usage not read");
      }
    }
  }

  /** The LUN the system disk has with this driver (LIO 0, tgt 1). */
  get systemLun(): number {
    return this.d.targets.firstLun;
  }

  private async applyTarget(machine: Machine, target: Target): Promise<TargetSpec | undefined> {
    try {
      const spec = await this.specFor(target);
      await this.d.targets.apply(spec);
      this.d.store.transaction(() => {
        this.d.store.targets.update(target.id, { status: "active", status_reason: null });
        const m = this.d.store.machines.get(machine.id);
        if (m?.status === "error")
          this.d.store.machines.update(machine.id, { status: "active", status_reason: null });
      });
      return spec;
    } catch (err) {
      const reason = errorText(err);
      this.markError(machine.id, target.id, reason);
      this.d.log.error(
        { machine: machine.name, iqn: target.iqn, reason },
        "iSCSI target not applied",
      );
      return undefined;
    }
  }

  private async specFor(target: Target): Promise<TargetSpec> {
    const disk = this.systemDisk(target);
    this.knownTargetIds.add(target.id);
    const system = this.adopted(
      target,
      await this.d.overlays.create(
        disk.imagePath,
        disk.overlayId,
        this.ownerOf(target, target.system_image_id, disk.version),
      ),
    );
    if (disk.draftUpdateId === undefined && target.overlay_version === null) {
      this.d.store.targets.update(target.id, { overlay_version: disk.version });
    }
    const luns: LunSpec[] = [this.lun(this.d.targets.firstLun, system, false, target, "system")];
    if (target.extra_disk_image_id !== null) {
      const xd = this.extraDisk(target);
      // A games disk is the same for every machine: shared, read-only. A data disk is
      // the machine's own: an overlay it can write; so is an update's draft of either.
      const extra: OverlayRef =
        xd.overlayId !== undefined
          ? this.adopted(
              target,
              await this.d.overlays.create(
                xd.imagePath,
                xd.overlayId,
                this.ownerOf(target, target.extra_disk_image_id, xd.version),
              ),
            )
          : { kind: "file", path: xd.imagePath, sizeBytes: await fileSize(xd.imagePath) };
      if (xd.draftUpdateId === undefined && target.extra_overlay_version !== xd.version) {
        this.d.store.targets.update(target.id, { extra_overlay_version: xd.version });
      }
      luns.push(
        this.lun(this.d.targets.firstLun + 1, extra, xd.overlayId === undefined, target, "extra"),
      );
    }
    return {
      iqn: target.iqn,
      portal: {
        address: target.portal_ip || this.d.portal.address,
        port: target.portal_port || this.d.portal.port,
      },
      luns,
      acl: {
        initiatorIqn: target.initiator_iqn,
        chapUser: target.chap_username,
        chapPassword: target.chap_password,
        ...(target.mutual_chap_username && target.mutual_chap_password
          ? { mutualUser: target.mutual_chap_username, mutualPassword: target.mutual_chap_password }
          : {}),
      },
    };
  }

  private lun(
    n: number,
    ref: OverlayRef,
    readOnly: boolean,
    target: Target,
    role: string,
  ): LunSpec {
    return {
      lun: n,
      path: ref.path,
      kind: ref.kind,
      readOnly,
      sizeBytes: ref.sizeBytes,
      // Stable across restarts and re-creation, so Windows sees the same disk every boot.
      wwn: createHash("sha256").update(`${target.iqn}/${role}`).digest("hex").slice(0, 16),
    };
  }

  /**
   * New CHAP secrets for this boot, in the store first: a restart applies what the store
   * holds. Where the driver made credentials ready for this boot (tgt's spare account, whose
   * user name alternates between two), those; else a fresh secret for the same user.
   */
  private rotateChap(target: Target): Target {
    const mutual = Boolean(target.mutual_chap_username && target.mutual_chap_password);
    const ready = mutual
      ? undefined
      : this.d.targets.readySecret?.(target.iqn, target.chap_username);
    const patch: Partial<Target> = ready
      ? { chap_username: ready.user, chap_password: ready.password }
      : { chap_password: chapSecret() };
    if (mutual) patch.mutual_chap_password = chapSecret();
    const updated = this.d.store.targets.update(target.id, patch) ?? { ...target, ...patch };
    this.d.log.info(
      { iqn: target.iqn, user: updated.chap_username, made_ahead: ready !== undefined },
      "CHAP secret rotated for a new boot",
    );
    return updated;
  }

  private async resetOverlays(target: Target): Promise<void> {
    const live = await this.d.targets.sessions(target.iqn);
    const exists = (await this.d.targets.list()).includes(target.iqn);
    // The target holds the old overlay open: take it down (its only session, if any, is
    // this machine's dead one) so the fresh clone is what it serves next.
    if (exists) await this.d.targets.remove(target.iqn, { force: live.length > 0 });
    // The super-client of an update keeps its draft across reboots: only its own disks reset.
    const disk = this.systemDisk(target);
    this.knownTargetIds.add(target.id);
    if (disk.draftUpdateId === undefined) {
      await this.d.overlays.reset(
        disk.imagePath,
        disk.overlayId,
        this.ownerOf(target, target.system_image_id, disk.version),
      );
      this.d.store.targets.update(target.id, { overlay_version: disk.version });
    }
    if (target.extra_disk_image_id !== null) {
      const xd = this.extraDisk(target, true);
      // A data disk is reset to the current version; a games disk serves it from now on.
      if (xd.draftUpdateId === undefined && xd.overlayId !== undefined) {
        await this.d.overlays.reset(
          xd.imagePath,
          xd.overlayId,
          this.ownerOf(target, target.extra_disk_image_id, xd.version),
        );
      }
      if (xd.draftUpdateId === undefined) {
        this.d.store.targets.update(target.id, { extra_overlay_version: xd.version });
      }
    }
    this.d.store.targets.update(target.id, {
      overlay_reset_at: new Date(this.clock()).toISOString(),
    });
    this.d.log.info(
      { iqn: target.iqn, stale_sessions: live.length },
      "overlay reset for a new boot",
    );
  }

  // --- Image versions: which version a machine boots, drafts, resets (version-selection.ts) ---

  private systemDisk(target: Target): SystemDisk {
    const disk = selectSystemDisk(this.d.store, target, systemOverlayId(target.id));
    if (typeof disk === "string") throw new Error(disk);
    return disk;
  }

  private extraDisk(target: Target, fresh = false): ExtraDisk {
    const disk = selectExtraDisk(this.d.store, target, extraOverlayId(target.id), fresh);
    if (typeof disk === "string") throw new Error(disk);
    return disk;
  }

  /**
   * The drafts the machine boots as a super-client (of its system image, of its extra
   * disk's image, or both), by update id: a new draft must respect the free-space reserve
   * (an existing one keeps booting whatever the reserve says).
   */
  private async prepareDrafts(target: Target): Promise<number[]> {
    const drafts: { overlayId: string; updateId: number }[] = [];
    const system = this.systemDisk(target);
    if (system.draftUpdateId !== undefined) {
      drafts.push({ overlayId: system.overlayId, updateId: system.draftUpdateId });
    }
    if (target.extra_disk_image_id !== null) {
      const extra = this.extraDisk(target);
      if (extra.draftUpdateId !== undefined && extra.overlayId !== undefined) {
        drafts.push({ overlayId: extra.overlayId, updateId: extra.draftUpdateId });
      }
    }
    if (drafts.length === 0) return [];
    const existing = await this.d.overlays.list();
    if (drafts.some((d) => !existing.includes(d.overlayId))) await this.checkReserve();
    return drafts.map((d) => d.updateId);
  }

  /**
   * At a boot, a games disk that serves an older version than the current one moves to it
   * (it is read-only: nothing of the machine's is lost). True when the LUN changes.
   */
  private async refreshGamesDisk(target: Target): Promise<boolean> {
    if (target.extra_disk_image_id === null || target.target_type === "system_data") return false;
    const fresh = this.extraDisk(target, true);
    if (fresh.draftUpdateId !== undefined || fresh.version === target.extra_overlay_version) {
      return false;
    }
    this.d.store.targets.update(target.id, { extra_overlay_version: fresh.version });
    return true;
  }

  private async checkReserve(): Promise<void> {
    const r = await this.d.reserve?.();
    if (r && !r.ok) throw new ReserveError(r.reason ?? "below the free-space reserve");
  }

  /** Removes a target (its sessions are dead ones) so the next apply serves other LUN files. */
  private async takeDown(target: Target): Promise<void> {
    if (!(await this.d.targets.list()).includes(target.iqn)) return;
    const live = await this.d.targets.sessions(target.iqn);
    await this.d.targets.remove(target.iqn, { force: live.length > 0 });
  }

  /** Whether the machine's initiator is logged in to its target now. */
  async liveSession(target: Target): Promise<boolean> {
    const sessions = await this.d.targets.sessions(target.iqn);
    return sessions.some((s) => s.initiatorIqn === target.initiator_iqn);
  }

  /**
   * A fresh overlay of the version the target follows (or pins), for a machine that is
   * off: refused with LiveSessionError while it is logged in, ReserveError below the reserve.
   */
  resetTarget(targetId: number): Promise<Target> {
    const target = this.d.store.targets.get(targetId);
    if (!target) return Promise.reject(new Error(`no target ${targetId}`));
    return this.perMachine.run(target.machine_id, async () => {
      const machine = this.d.store.machines.get(target.machine_id)!;
      if (await this.liveSession(target)) {
        throw new LiveSessionError(
          machine.name,
          this.d.store.sessions.current(machine.id)?.session_id,
        );
      }
      await this.checkReserve();
      await this.resetOverlays(target);
      await this.applyTarget(machine, this.d.store.targets.get(target.id)!);
      return this.d.store.targets.get(target.id)!;
    });
  }

  /**
   * Clones the target's system overlay under `name` (reflink clone or thin snapshot, never
   * a copy), under the machine's lock so no reset or boot interleaves. With `refuseLive`,
   * refused (LiveSessionError) while the machine is logged in: a disk being written is not
   * a consistent image. Without, the clone is crash-consistent, like a power cut.
   */
  cloneSystemOverlay(targetId: number, name: string, refuseLive: boolean): Promise<OverlayRef> {
    const target = this.d.store.targets.get(targetId);
    if (!target) return Promise.reject(new Error(`no target ${targetId}`));
    return this.perMachine.run(target.machine_id, async () => {
      if (refuseLive) await this.refuseLive(target);
      const overlays = this.d.overlays;
      if (!overlays.freezeVersion) {
        throw new Error(`the ${overlays.name} overlay driver cannot clone overlays`);
      }
      return overlays.freezeVersion(systemOverlayId(target.id), name);
    });
  }

  /**
   * Puts a clone back as the target's system overlay (a snapshot restore): refused while
   * the machine is logged in; its target is taken down and rebuilt on the restored disk.
   */
  restoreSystemOverlay(targetId: number, path: string, version: number | null): Promise<Target> {
    const target = this.d.store.targets.get(targetId);
    if (!target) return Promise.reject(new Error(`no target ${targetId}`));
    return this.perMachine.run(target.machine_id, async () => {
      const machine = this.d.store.machines.get(target.machine_id)!;
      await this.refuseLive(target);
      await this.takeDown(target);
      this.knownTargetIds.add(target.id);
      await this.d.overlays.reset(
        path,
        systemOverlayId(target.id),
        this.ownerOf(target, target.system_image_id, version),
      );
      const restored = this.d.store.targets.update(target.id, { overlay_version: version })!;
      await this.applyTarget(machine, restored);
      this.d.log.info({ iqn: target.iqn, from: path, version }, "overlay restored from a snapshot");
      return this.d.store.targets.get(target.id)!;
    });
  }

  /**
   * Deletes what storage_garbage lists (snapshots whose rows went, with their target or
   * machine too); a failure stays queued for the next sweep.
   */
  async collectGarbage(): Promise<void> {
    const remove = this.d.overlays.deleteVersion?.bind(this.d.overlays);
    if (!remove) return;
    for (const g of this.d.store.storageGarbage.pending()) {
      try {
        await remove(g.path);
        this.d.store.storageGarbage.done(g.id);
        this.d.log.info({ path: g.path, reason: g.reason }, "deleted with its row");
      } catch (err) {
        this.d.store.storageGarbage.failed(g.id, errorText(err));
        this.d.log.warn({ path: g.path, err: errorText(err) }, "not deleted yet; retried later");
      }
    }
  }

  private async refuseLive(target: Target): Promise<void> {
    if (!(await this.liveSession(target))) return;
    const machine = this.d.store.machines.get(target.machine_id);
    throw new LiveSessionError(
      machine?.name ?? `${target.machine_id}`,
      this.d.store.sessions.current(target.machine_id)?.session_id,
    );
  }

  /**
   * After an update of the machine's image closed (the machine is off): its target is
   * rebuilt on its own overlay instead of the draft.
   */
  retarget(machineId: number): Promise<void> {
    return this.perMachine.run(machineId, async () => {
      const machine = this.d.store.machines.get(machineId);
      if (!machine) return;
      for (const t of this.d.store.targets.forMachine(machineId)) {
        if (t.is_active !== 1) continue;
        await this.takeDown(t);
        await this.applyTarget(machine, t);
      }
    });
  }

  /**
   * Targets and overlays under our names that no store row wants any more. Only what this
   * process saw in the store and then saw go (an admin deleted it) is removed; anything
   * the store never named is left in place: targets keep running, overlays are quarantined.
   */
  private async removeOrphans(atStart: boolean): Promise<void> {
    const rows = this.d.store.targets.all();
    for (const t of rows) {
      this.knownTargetIds.add(t.id);
      this.knownIqns.add(t.iqn);
    }
    const wantedIqns = new Set(rows.filter((t) => t.is_active === 1).map((t) => t.iqn));
    const namedIqns = new Set(rows.map((t) => t.iqn));
    this.unknownIqns.clear();
    for (const iqn of await this.d.targets.list()) {
      if (wantedIqns.has(iqn)) continue;
      if (atStart ? !namedIqns.has(iqn) : !this.knownIqns.has(iqn)) {
        this.unknownIqns.add(iqn);
        continue;
      }
      try {
        await this.d.targets.remove(iqn);
        this.d.log.info({ iqn }, "orphaned iSCSI target removed");
      } catch (err) {
        this.d.log.warn({ iqn, err: errorText(err) }, "orphaned iSCSI target left in place");
      }
    }
    if (this.unknownIqns.size) {
      this.d.log.warn(
        { iqns: [...this.unknownIqns] },
        "iSCSI targets the database does not know are left running (see /api/storage/quarantine)",
      );
    }
    const liveTargetIds = new Set(rows.map((t) => t.id));
    for (const id of await this.d.overlays.list()) {
      const m = OVERLAY_ID.exec(id);
      if (!m) continue;
      const targetId = Number(m[1]);
      if (liveTargetIds.has(targetId)) continue;
      if (!atStart && this.knownTargetIds.has(targetId)) {
        await this.d.overlays.delete(id);
        this.d.log.info({ overlay: id }, "overlay of a deleted target removed");
        continue;
      }
      const reason = `no target ${targetId} in the database (a start on an empty or older database?)`;
      try {
        const name = await this.d.overlays.quarantine(id, reason);
        if (name) this.alert(`overlay ${id} quarantined as ${name}: ${reason}`);
      } catch (err) {
        this.d.log.error({ overlay: id, err: errorText(err) }, "unknown overlay left in place");
      }
    }
    await this.collectGarbage();
  }

  /** The overlays set aside and the targets left running, for the storage API. */
  async quarantine(): Promise<Quarantine> {
    return {
      overlays: await this.d.overlays.quarantined(),
      unknown_targets: [...this.unknownIqns].sort(),
    };
  }

  /**
   * An admin's explicit deletion of one quarantined overlay (by its quarantine name) or of
   * one unknown target (by its IQN). False when nothing has that name.
   */
  async deleteQuarantined(name: string): Promise<boolean> {
    if (this.unknownIqns.has(name)) {
      await this.d.targets.remove(name, { force: true });
      this.unknownIqns.delete(name);
      this.d.log.warn({ iqn: name }, "unknown iSCSI target removed by an admin");
      return true;
    }
    return this.d.overlays.deleteQuarantined(name);
  }

  private ownerOf(target: Target, imageId: number, version?: number | null): OverlayOwner {
    return {
      targetId: target.id,
      machineId: target.machine_id,
      imageId,
      imageVersion: version ?? this.d.store.images.get(imageId)?.current_version ?? null,
    };
  }

  /** An overlay that was someone else's was set aside for this one: say so loudly. */
  private adopted(target: Target, ref: CreatedOverlay): OverlayRef {
    if (ref.replaced) {
      this.d.log.error(
        {
          iqn: target.iqn,
          quarantined_as: ref.replaced.quarantinedAs,
          reason: ref.replaced.reason,
        },
        "overlay of another owner quarantined; a fresh one was made",
      );
      this.alert(
        `target ${target.name}: ${ref.replaced.reason}; quarantined as ${ref.replaced.quarantinedAs}, a fresh overlay was made`,
      );
    }
    return { kind: ref.kind, path: ref.path, sizeBytes: ref.sizeBytes };
  }

  private alert(message: string): void {
    this.d.bus?.publish("system_alert", { level: "warning", source: "iscsi", message });
  }

  private markError(machineId: number, targetId: number, reason: string) {
    this.d.store.transaction(() => {
      this.d.store.targets.update(targetId, { status: "error", status_reason: reason });
      this.d.store.machines.update(machineId, { status: "error", status_reason: reason });
    });
  }

  private sanbootData(machine: Machine, target: Target, spec: TargetSpec): SanbootData {
    const disk = (lun: number) => ({
      server: spec.portal.address,
      port: spec.portal.port,
      lun,
      targetIqn: spec.iqn,
    });
    return {
      name: machine.name,
      ...(machine.hostname ? { hostname: machine.hostname } : {}),
      initiatorIqn: target.initiator_iqn,
      chap: { username: target.chap_username, password: target.chap_password },
      ...(target.mutual_chap_username && target.mutual_chap_password
        ? {
            mutualChap: {
              username: target.mutual_chap_username,
              password: target.mutual_chap_password,
            },
          }
        : {}),
      system: disk(spec.luns[0]!.lun),
      ...(spec.luns.length > 1 ? { extraDisks: spec.luns.slice(1).map((l) => disk(l.lun)) } : {}),
    };
  }
}

async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
