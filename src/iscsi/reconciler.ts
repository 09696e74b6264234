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
import type { Target } from "../store/targets.js";
import type { OverlayDriver, OverlayRef } from "./overlay/types.js";
import type { LunSpec, TargetDriver, TargetSpec } from "./target/types.js";

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
}

export type Prepared = { ok: true; data: SanbootData } | { ok: false; reason: string };

/** The overlay of a target's system disk and of its extra disk. Ids are ours alone. */
export const systemOverlayId = (targetId: number) => `t${targetId}-system`;
export const extraOverlayId = (targetId: number) => `t${targetId}-extra`;
const OVERLAY_ID = /^t(\d+)-(system|extra)$/;

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
      await this.removeOrphans();
    });
  }

  /**
   * Before a sanboot script is served: the overlay and the target exist, fresh for a
   * reset-on-reboot machine. The machine is asking for its boot script, so it is in its
   * firmware: any session its initiator still has is the dead one of its previous boot.
   */
  prepareSanboot(machine: Machine, target: Target): Promise<Prepared> {
    return this.perMachine.run(machine.id, async () => {
      try {
        if (machine.overlay_policy === "reset") await this.resetOverlays(target);
        const spec = await this.applyTarget(machine, target);
        if (!spec)
          return {
            ok: false,
            reason: this.d.store.targets.get(target.id)?.status_reason ?? "failed",
          };
        return { ok: true, data: this.sanbootData(machine, target, spec) };
      } catch (err) {
        const reason = errorText(err);
        this.markError(machine.id, target.id, reason);
        return { ok: false, reason };
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
    await this.removeOrphans();
    this.d.log.info(
      { machines: machineIds.length, driver: this.d.targets.name },
      "iSCSI targets reconciled",
    );
  }

  /**
   * Reads who is logged in and moves boot sessions along: `active` at login, ended with
   * its duration when the initiator is gone. Also records overlay usage.
   */
  async pollSessions(): Promise<void> {
    for (const target of this.d.store.targets.allActive()) {
      let loggedIn: boolean;
      try {
        const sessions = await this.d.targets.sessions(target.iqn);
        loggedIn = sessions.some((s) => s.initiatorIqn === target.initiator_iqn);
      } catch (err) {
        this.d.log.debug({ iqn: target.iqn, err: errorText(err) }, "session poll failed");
        continue;
      }
      const s = this.d.store;
      const now = new Date(this.clock()).toISOString();
      const current = s.sessions.current(target.machine_id);
      if (loggedIn && (!current || current.status === "starting")) {
        const row =
          current ?? s.sessions.start({ machine_id: target.machine_id, boot_method: "iscsi" });
        s.sessions.update(row.id, { status: "active", iscsi_login_at: now, target_id: target.id });
        s.machines.update(target.machine_id, { last_seen: now });
        this.d.log.info(
          { machine_id: target.machine_id, iqn: target.iqn },
          "iSCSI session started",
        );
      } else if (!loggedIn && current?.status === "active" && current.target_id === target.id) {
        s.sessions.update(current.id, { iscsi_logout_at: now });
        s.sessions.end(current.id, "stopped");
        this.d.log.info({ machine_id: target.machine_id, iqn: target.iqn }, "iSCSI session ended");
        this.d.bus?.publish("session_stopped", {
          session_id: current.session_id,
          machine_id: target.machine_id,
          status: "stopped",
        });
      }
    }
  }

  /** Records each overlay's usage on its target. */
  async recordUsage(): Promise<void> {
    for (const target of this.d.store.targets.allActive()) {
      try {
        const u = await this.d.overlays.usage(systemOverlayId(target.id));
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
    const systemImage = this.requireImage(target.system_image_id, "system image");
    const system = await this.d.overlays.create(systemImage, systemOverlayId(target.id));
    const luns: LunSpec[] = [this.lun(this.d.targets.firstLun, system, false, target, "system")];
    if (target.extra_disk_image_id !== null) {
      const extraImage = this.requireImage(target.extra_disk_image_id, "extra disk image");
      // A games disk is the same for every machine: shared, read-only. A data disk is
      // the machine's own: an overlay it can write.
      const extra: OverlayRef =
        target.target_type === "system_data"
          ? await this.d.overlays.create(extraImage, extraOverlayId(target.id))
          : { kind: "file", path: extraImage, sizeBytes: await fileSize(extraImage) };
      luns.push(
        this.lun(
          this.d.targets.firstLun + 1,
          extra,
          target.target_type !== "system_data",
          target,
          "extra",
        ),
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

  private requireImage(imageId: number, what: string): string {
    const path = this.d.imagePath(imageId);
    if (!path) throw new Error(`${what} ${imageId} has no ready version`);
    return path;
  }

  private async resetOverlays(target: Target): Promise<void> {
    const live = await this.d.targets.sessions(target.iqn);
    const exists = (await this.d.targets.list()).includes(target.iqn);
    // The target holds the old overlay open: take it down (its only session, if any, is
    // this machine's dead one) so the fresh clone is what it serves next.
    if (exists) await this.d.targets.remove(target.iqn, { force: live.length > 0 });
    const image = this.requireImage(target.system_image_id, "system image");
    await this.d.overlays.reset(image, systemOverlayId(target.id));
    if (target.target_type === "system_data" && target.extra_disk_image_id !== null) {
      await this.d.overlays.reset(
        this.requireImage(target.extra_disk_image_id, "extra disk image"),
        extraOverlayId(target.id),
      );
    }
    this.d.store.targets.update(target.id, {
      overlay_reset_at: new Date(this.clock()).toISOString(),
    });
    this.d.log.info(
      { iqn: target.iqn, stale_sessions: live.length },
      "overlay reset for a new boot",
    );
  }

  /** Targets and overlays under our names that no store row wants any more. */
  private async removeOrphans(): Promise<void> {
    const all = this.d.store.targets.allActive();
    const wantedIqns = new Set(all.map((t) => t.iqn));
    for (const iqn of await this.d.targets.list()) {
      if (wantedIqns.has(iqn)) continue;
      try {
        await this.d.targets.remove(iqn);
        this.d.log.info({ iqn }, "orphaned iSCSI target removed");
      } catch (err) {
        this.d.log.warn({ iqn, err: errorText(err) }, "orphaned iSCSI target left in place");
      }
    }
    const liveTargetIds = new Set(this.d.store.targets.ids());
    for (const id of await this.d.overlays.list()) {
      const m = OVERLAY_ID.exec(id);
      if (!m || liveTargetIds.has(Number(m[1]))) continue;
      await this.d.overlays.delete(id);
      this.d.log.info({ overlay: id }, "orphaned overlay removed");
    }
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
