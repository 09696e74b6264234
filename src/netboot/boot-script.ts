import type { Logger } from "pino";
import type { Image } from "../store/images.js";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import type { Target } from "../store/targets.js";
import type { SanbootData, ScriptData, ScriptKind } from "./script/kinds.js";
import { renderScript, type ScriptTemplates } from "./script/render.js";

/**
 * Prepares a machine's iSCSI boot: makes sure its overlay and target exist (the
 * reconciler), then says how to reach them. Supplied by the iSCSI module; without it a
 * sanboot machine is told that its disk is not ready.
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

/** What a request may ask for beyond the machine's default: a menu choice. */
export interface BootChoice {
  targetId?: number;
  local?: boolean;
}

/**
 * The script for the machine that asks. The decision (which kind, with which data) is
 * made here from the store; every value reaches the script through the renderer, which
 * validates or encodes it.
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

  if (!machine || machine.status === "discovered") {
    return waiting("This PC is registered. An admin can now assign it an image.");
  }
  if (choice.local || machine.boot_action === "local" || machine.boot_action === "disabled") {
    return render("local", { name: machine.name });
  }
  const targets = deps.store.targets.forMachine(machine.id).filter((t) => t.is_active === 1);
  switch (machine.boot_action) {
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
      if (choice.targetId === undefined) {
        const items = targets.map((t) => ({
          label: t.description || t.name,
          url: deps.scriptUrl(mac, `target=${t.id}`),
        }));
        items.push({ label: "Boot from the local disk", url: deps.scriptUrl(mac, "local=1") });
        return render("menu", { title: `bootfleet: ${machine.name}`, items, defaultIndex: 0 });
      }
      break;
    }
    default:
      break;
  }
  const target =
    choice.targetId !== undefined ? targets.find((t) => t.id === choice.targetId) : targets[0];
  if (!target) return waiting("No disk is assigned to this PC yet.");
  if (!deps.sanboot) return waiting("The iSCSI service is not running on the boot server.");
  const prepared = await deps.sanboot(machine, target);
  if (!prepared.ok) {
    deps.log.warn({ machine: machine.name, reason: prepared.reason }, "sanboot not ready");
    return waiting(`This PC's disk is not ready: ${prepared.reason}`);
  }
  return render("sanboot", prepared.data);
}
