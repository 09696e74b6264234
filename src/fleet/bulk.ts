import type { JobRunner } from "../jobs/runner.js";
import { errorText } from "../lib/error-text.js";
import type { PowerService } from "../power/service.js";
import type { Store } from "../store/index.js";
import type { BootAction } from "../store/machines.js";

export const BULK_JOB = "machines_bulk";

export const BULK_ACTIONS = [
  "power_on",
  "power_off",
  "power_cycle",
  "reset_overlays",
  "assign_image",
  "set_boot_action",
] as const;
export type BulkAction = (typeof BULK_ACTIONS)[number];

export interface BulkParams {
  action: BulkAction;
  machine_ids: number[];
  /** assign_image: the image every selected machine's system disk gets. */
  image_id?: number;
  /** set_boot_action: what the machines boot next. */
  boot_action?: BootAction;
}

export interface BulkMachineResult {
  machine_id: number;
  name: string | null;
  ok: boolean;
  message: string;
}

export interface BulkDeps {
  store: Store;
  power?: () => PowerService | undefined;
  /** Fresh overlays for a machine (refused while it runs). */
  resetOverlays?: (machineId: number) => Promise<void>;
}

/**
 * One job per bulk action: each machine is tried in turn, its outcome logged and kept in
 * the result, and one machine's failure never stops the others. The job fails only when
 * every machine failed, so a room where one PC has no BMC still shows which ones worked.
 */
export function registerBulkJob(runner: JobRunner, d: BulkDeps): void {
  runner.register(BULK_JOB, async (raw, ctx) => {
    const p = raw as BulkParams;
    const results: BulkMachineResult[] = [];
    let i = 0;
    for (const id of p.machine_ids) {
      ctx.throwIfCancelled();
      const m = d.store.machines.get(id);
      let r: BulkMachineResult;
      if (!m) r = { machine_id: id, name: null, ok: false, message: "no such machine" };
      else {
        try {
          r = { machine_id: id, name: m.name, ok: true, message: await apply(d, p, id) };
        } catch (err) {
          r = { machine_id: id, name: m.name, ok: false, message: errorText(err) };
        }
      }
      results.push(r);
      ctx.log(r.ok ? "info" : "error", `${r.name ?? `machine ${id}`}: ${r.message}`);
      ctx.progress((++i / p.machine_ids.length) * 100);
    }
    const failed = results.filter((r) => !r.ok).length;
    const summary = { action: p.action, total: results.length, failed, results };
    if (failed > 0 && failed === results.length) {
      throw new Error(`${p.action} failed on every machine (${failed}): ${results[0]!.message}`);
    }
    return summary;
  });
}

async function apply(d: BulkDeps, p: BulkParams, id: number): Promise<string> {
  const m = d.store.machines.get(id)!;
  switch (p.action) {
    case "power_on":
    case "power_off":
    case "power_cycle": {
      const power = d.power?.();
      if (!power) throw new Error("power control is not available");
      const action = p.action.slice("power_".length) as "on" | "off" | "cycle";
      const r = await power.act(m, action);
      return r.method === "wol" ? "Wake-on-LAN magic packet sent" : `BMC: power ${action} accepted`;
    }
    case "reset_overlays":
      if (!d.resetOverlays) throw new Error("iSCSI is not available");
      await d.resetOverlays(id);
      return "overlays reset to a fresh clone of their image";
    case "assign_image": {
      const targets = d.store.targets.forMachine(id);
      // One image for all of a boot menu's targets would make work and games the same disk.
      if (targets.length > 1) {
        throw new Error(`has ${targets.length} targets (a boot menu): assign each its image`);
      }
      d.store.transaction(() => {
        d.store.machines.update(id, { boot_image_id: p.image_id! });
        for (const t of targets) d.store.targets.update(t.id, { system_image_id: p.image_id! });
      });
      // Running targets are left alone: the machine's disk must not change under it.
      return m.overlay_policy === "reset"
        ? `image ${p.image_id} assigned: used from the machine's next boot`
        : `image ${p.image_id} assigned: a persistent machine uses it once its overlays are reset`;
    }
    case "set_boot_action":
      d.store.machines.update(id, { boot_action: p.boot_action! });
      return `boot action ${p.boot_action}`;
  }
}
