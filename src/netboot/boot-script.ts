import type { Logger } from "pino";
import type { Image } from "../store/images.js";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import type { Target } from "../store/targets.js";
import {
  type BootChoice,
  type BootFacts,
  type BootPlan,
  offersLocalDisk,
  planBoot,
} from "./boot-plan.js";
import { type MenuSettings, menuSettings } from "./menu-settings.js";
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
  /** A boot menu's wait where neither the machine nor its room sets one. */
  menuTimeoutSeconds: number;
  sanboot?: SanbootPreparer;
}

/** What a machine's boot depends on besides its record: its targets and menu settings. */
interface MachineBoot {
  targets: Target[];
  menu: MenuSettings;
  facts: BootFacts;
}

function machineBoot(deps: BootScriptDeps, machine: Machine): MachineBoot {
  const targets = activeTargets(deps, machine);
  const location =
    machine.location_id === null ? undefined : deps.store.locations.get(machine.location_id);
  const menu = menuSettings(machine, location, deps.menuTimeoutSeconds);
  return {
    targets,
    menu,
    facts: { activeTargets: targets.length, localDiskEntry: menu.localDisk },
  };
}

/** The boot plan of the machine that asks, with its targets and menu settings read. */
export function planFor(
  deps: BootScriptDeps,
  machine: Machine | undefined,
  choice: BootChoice = {},
): BootPlan {
  return machine ? planBoot(machine, choice, machineBoot(deps, machine).facts) : planBoot(machine);
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

  const boot = machine ? machineBoot(deps, machine) : undefined;
  const plan = planBoot(machine, choice, boot?.facts);
  if (plan.boot === "discovery" || !machine || !boot) {
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
      // Each entry is a fresh bound URL of this machine's script for one target: chosen,
      // it is served like any sanboot (peer checked, once, CHAP rotated). The menu itself
      // holds no secret.
      const items = boot.targets.map((t) => ({
        label: menuLabel(deps, t),
        url: deps.scriptUrl(mac, `target=${t.id}`),
      }));
      if (offersLocalDisk(machine, boot.facts)) {
        items.push({ label: "Boot from the local disk", url: deps.scriptUrl(mac, "local=1") });
      }
      if (items.length === 0) return waiting("No disk is assigned to this PC yet.");
      const chosen = boot.targets.findIndex((t) => t.id === boot.menu.defaultTargetId);
      return render("menu", {
        title: `bootfleet: ${machine.name}`,
        items,
        defaultIndex: Math.max(chosen, 0),
        timeoutMs: boot.menu.timeoutSeconds * 1000,
      });
    }
    case "sanboot":
      return sanbootScript(deps, machine, plan.targetId, waiting, (data) =>
        render("sanboot", data),
      );
  }
}

/**
 * What a menu entry says: the target's description when an admin wrote one ("Games"),
 * else its image's name ("Windows 11"), else the target's name. The renderer shows it as
 * text, never as script (script/values.ts displayText). A long one is cut: a menu line
 * is one row of an 80-column screen.
 */
function menuLabel(deps: BootScriptDeps, target: Target): string {
  const label =
    target.description || deps.store.images.get(target.system_image_id)?.name || target.name;
  const chars = Array.from(label);
  return chars.length > MENU_LABEL_CHARS
    ? `${chars.slice(0, MENU_LABEL_CHARS - 1).join("")}\u2026`
    : label;
}

const MENU_LABEL_CHARS = 48;

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
