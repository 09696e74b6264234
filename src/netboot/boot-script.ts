import type { Logger } from "pino";
import type { Image } from "../store/images.js";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import type { Target } from "../store/targets.js";
import { type BootChoice, planBoot } from "./boot-plan.js";
import type { SanbootData, ScriptData, ScriptKind } from "./script/kinds.js";
import { renderScript, type ScriptTemplates } from "./script/render.js";

/**
 * Prepares a machine's iSCSI boot: makes sure its overlay and target exist (the
 * reconciler), with a CHAP secret new for this boot and, for a reset-on-reboot machine, a
 * fresh disk; then says how to reach them. Called only for a verified boot (boot-routes.ts
 * checked the peer and the URL first). Supplied by the iSCSI module; without it a sanboot
 * machine is told that its disk is not ready.
 */
export type SanbootPreparer = (
  machine: Machine,
  target: Target,
) => Promise<{ ok: true; data: SanbootData } | { ok: false; reason: string }>;

export interface BootScriptDeps {
  store: Store;
  templates: ScriptTemplates;
  log: Logger;
  /** A fresh, bound URL of this machine's script (with `query` appended when given). */
  scriptUrl(mac: string, query?: string): string;
  /** URL of a file of the image library (kernels, initrds). */
  fileUrl(imageId: number, name: string): string;
  /** The kernel command line kept with a kernel image (its cmdline.txt). */
  kernelCmdline(image: Image): string;
  sanboot?: SanbootPreparer;
}

export interface Rendered {
  kind: ScriptKind;
  text: string;
}

/**
 * The script for the machine that asks: its boot plan (boot-plan.ts) made concrete. What
 * the plan needs but cannot have yet (no ready kernel image, no disk, iSCSI down) sends
 * the machine back to the discovery loop with the reason on screen. Every value reaches
 * the script through the renderer, which validates or encodes it.
 */
export async function scriptFor(
  deps: BootScriptDeps,
  mac: string,
  machine: Machine | undefined,
  choice: BootChoice = {},
): Promise<Rendered> {
  const render = <K extends ScriptKind>(kind: K, data: ScriptData[K]): Rendered => ({
    kind,
    text: renderScript(deps.templates, kind, data),
  });
  const waiting = (message: string) =>
    render("discovery", { mac, scriptUrl: deps.scriptUrl(mac), message });

  const plan = planBoot(machine, choice);
  if (plan.boot === "discovery" || !machine) {
    return waiting("This PC is registered. An admin can now assign it an image.");
  }
  switch (plan.boot) {
    case "local":
      return render("local", { name: machine.name });
    case "custom":
      if (!machine.custom_script) return waiting("No custom script is assigned to this PC.");
      return render("custom", { script: machine.custom_script });
    case "kernel": {
      const image = machine.boot_image_id
        ? deps.store.images.get(machine.boot_image_id)
        : undefined;
      if (image?.status !== "ready") return waiting("No bootable kernel image is assigned.");
      return render("kernel", {
        name: machine.name,
        kernelUrl: deps.fileUrl(image.id, "vmlinuz"),
        initrds: [{ url: deps.fileUrl(image.id, "initrd.img"), name: "initrd.img" }],
        cmdline: deps.kernelCmdline(image),
      });
    }
    case "menu": {
      const items = activeTargets(deps, machine).map((t) => ({
        label: t.description || t.name,
        url: deps.scriptUrl(mac, `target=${t.id}`),
      }));
      items.push({ label: "Boot from the local disk", url: deps.scriptUrl(mac, "local=1") });
      return render("menu", { title: `bootfleet: ${machine.name}`, items, defaultIndex: 0 });
    }
    case "sanboot":
      return sanbootScript(deps, machine, plan.targetId, waiting, (data) =>
        render("sanboot", data),
      );
  }
}

function activeTargets(deps: BootScriptDeps, machine: Machine): Target[] {
  return deps.store.targets.forMachine(machine.id).filter((t) => t.is_active === 1);
}

async function sanbootScript(
  deps: BootScriptDeps,
  machine: Machine,
  targetId: number | undefined,
  waiting: (message: string) => Rendered,
  render: (data: SanbootData) => Rendered,
): Promise<Rendered> {
  const targets = activeTargets(deps, machine);
  const target = targetId !== undefined ? targets.find((t) => t.id === targetId) : targets[0];
  if (!target) return waiting("No disk is assigned to this PC yet.");
  if (!deps.sanboot) return waiting("The iSCSI service is not running on the boot server.");
  const prepared = await deps.sanboot(machine, target);
  if (!prepared.ok) {
    deps.log.warn({ machine: machine.name, reason: prepared.reason }, "sanboot not ready");
    return waiting(`This PC's disk is not ready: ${prepared.reason}`);
  }
  return render(prepared.data);
}
