import type { Machine } from "../store/machines.js";

/** The fields of a machine's record the plan reads (the proxy-DHCP reads only these). */
export type BootPlanMachine = Pick<Machine, "status" | "boot_action">;

/** What a request may ask for beyond the machine's default: a menu choice. */
export interface BootChoice {
  targetId?: number;
  local?: boolean;
}

/** What the plan needs to know besides the machine's record (boot-script.ts reads it). */
export interface BootFacts {
  /** How many active targets the machine has. */
  activeTargets: number;
  /** Its menu's "boot from the local disk" entry, as the machine, else its room, asks. */
  localDiskEntry: boolean;
}

/**
 * Facts that make no menu: one target, no local-disk entry. The proxy-DHCP plans without
 * reading targets, since it only asks whether the machine netboots at all, and a menu and
 * a sanboot both do.
 */
export const PLAIN_SANBOOT: BootFacts = { activeTargets: 1, localDiskEntry: false };

/**
 * What a machine boots, decided from its record alone (Pixiecore's BootSpec). The
 * proxy-DHCP and the HTTP script route both ask this one function, so they cannot
 * disagree: a machine the DHCP side sends to its local disk is never handed a netboot
 * script over HTTP, whatever URL it kept from an earlier boot.
 */
export type BootPlan =
  /** Unknown (or not recorded yet) or waiting for an admin: the discovery loop. */
  | { boot: "discovery" }
  /** Not netbooted: the firmware moves on to its next boot device. */
  | { boot: "local"; reason: LocalReason }
  | { boot: "custom" }
  | { boot: "kernel" }
  | { boot: "menu" }
  /** The machine's iSCSI disk: the chosen target, or its first active one. */
  | { boot: "sanboot"; targetId?: number };

export type LocalReason =
  | "status retired"
  | "status maintenance"
  | "status inactive"
  | "boot action local"
  | "boot action disabled"
  | "chosen in the menu";

/**
 * The plan for one machine. Order matters and is the policy:
 * 1. a machine taken out of service (retired, maintenance, inactive) boots locally, even
 *    while it sits in the discovery loop, so an admin can stop a PC from netbooting by
 *    its status alone;
 * 2. a boot action of local or disabled boots locally, discovered or not (the proxy-DHCP
 *    has always answered such a machine with "boot locally");
 * 3. an unknown or discovered machine waits in the discovery loop;
 * 4. otherwise its boot action, with a menu choice taken into account. A sanboot machine
 *    with one active target sanboots it with no menu; with several it gets a menu of them
 *    (the `menu` action shows one whatever the count, and always offers the local disk).
 * A machine in `error` still boots: the error is about its record, not a reason to
 * keep it off the network. A local-disk choice counts only where the menu offers that
 * entry; otherwise the plan is as if none was made.
 */
export function planBoot(
  machine: BootPlanMachine | undefined,
  choice: BootChoice = {},
  facts: BootFacts = PLAIN_SANBOOT,
): BootPlan {
  if (machine) {
    if (machine.status === "retired") return { boot: "local", reason: "status retired" };
    if (machine.status === "maintenance") return { boot: "local", reason: "status maintenance" };
    if (machine.status === "inactive") return { boot: "local", reason: "status inactive" };
    if (machine.boot_action === "local") return { boot: "local", reason: "boot action local" };
    if (machine.boot_action === "disabled") {
      return { boot: "local", reason: "boot action disabled" };
    }
  }
  if (!machine || machine.status === "discovered") return { boot: "discovery" };
  switch (machine.boot_action) {
    case "custom":
      return { boot: "custom" };
    case "kernel":
      return { boot: "kernel" };
    default: {
      // sanboot or menu (local and disabled were settled above).
      const menu = machine.boot_action === "menu" || facts.activeTargets > 1;
      if (menu && choice.local && offersLocalDisk(machine, facts)) {
        return { boot: "local", reason: "chosen in the menu" };
      }
      if (choice.targetId !== undefined) return { boot: "sanboot", targetId: choice.targetId };
      return menu ? { boot: "menu" } : { boot: "sanboot" };
    }
  }
}

/** Whether the machine's menu has a "boot from the local disk" entry. */
export function offersLocalDisk(machine: BootPlanMachine, facts: BootFacts): boolean {
  return machine.boot_action === "menu" || facts.localDiskEntry;
}

/** Whether the proxy-DHCP should offer a boot file at all. */
export function netboots(plan: BootPlan): boolean {
  return plan.boot !== "local";
}
