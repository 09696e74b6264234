import { randomBytes } from "node:crypto";

/**
 * The iSCSI identity the appliance gives a machine when it creates its target: the
 * target's IQN, the initiator name its iPXE presents (the target's ACL), and the CHAP
 * user and secret. Made when the target is created and stored with it; the secret is made
 * again at every verified boot (reconciler.ts), so one read from an earlier boot's script
 * is worth nothing. Nothing here reads the store.
 */
export interface MachineIdentity {
  iqn: string;
  initiator_iqn: string;
  chap_username: string;
  chap_password: string;
}

/** The machine-name part of an IQN: lowercase letters, digits, dots and hyphens. */
export function iqnSlug(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, "-")
    .replace(/^[-.]+|[-.]+$/g, "");
  return s || "machine";
}

/** The target IQN of a machine: `<prefix>:<slug of its name>`. */
export function targetIqn(prefix: string, machineName: string): string {
  return `${prefix}:${iqnSlug(machineName)}`;
}

/** The initiator name a machine's iPXE presents: bound to its MAC, so it is stable. */
export function initiatorIqn(prefix: string, mac: string): string {
  return `${prefix}:client-${mac.replace(/:/g, "")}`;
}

/** The CHAP user name of a machine's target (tgt and LIO take at most 64 characters here). */
export function chapUsername(machineName: string): string {
  return `bf-${iqnSlug(machineName)}`.slice(0, 64);
}

const CHAP_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/**
 * A CHAP secret: 16 letters and digits. Microsoft's initiator takes 12 to 16 characters,
 * and these never need escaping in an iPXE script.
 */
export function chapSecret(): string {
  const out: string[] = [];
  while (out.length < 16) {
    for (const b of randomBytes(32)) {
      // Rejection sampling keeps every character equally likely.
      if (b < 256 - (256 % CHAP_ALPHABET.length) && out.length < 16)
        out.push(CHAP_ALPHABET[b % CHAP_ALPHABET.length]!);
    }
  }
  return out.join("");
}

/**
 * The names of a machine's second, third... target (a boot menu of several images): its
 * own IQN and CHAP user, since tgt's CHAP accounts are global and an IQN names one
 * target. Made from the target's id, which is never handed out again (store migration
 * 6): `<machine's IQN>:t<id>` and `bf-<slug>_t<id>`. The ":" and "_" cannot come out of
 * iqnSlug, so no machine's first target can ever have these names.
 */
export function additionalTargetNames(
  first: Pick<MachineIdentity, "iqn" | "chap_username">,
  targetId: number,
): Pick<MachineIdentity, "iqn" | "chap_username"> {
  const suffix = `_t${targetId}`;
  return {
    iqn: `${first.iqn}:t${targetId}`,
    chap_username: `${first.chap_username.slice(0, 64 - suffix.length)}${suffix}`,
  };
}

/** A new identity for a machine's target, with a fresh CHAP secret. */
export function machineIdentity(
  prefix: string,
  machine: { name: string; mac_address: string },
): MachineIdentity {
  return {
    iqn: targetIqn(prefix, machine.name),
    initiator_iqn: initiatorIqn(prefix, machine.mac_address),
    chap_username: chapUsername(machine.name),
    chap_password: chapSecret(),
  };
}
