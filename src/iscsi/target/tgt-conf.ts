import type { TargetSpec } from "./types.js";

/** An initiator-address ACL entry that no initiator can match (see renderTgtConf). */
export const TGT_NO_ADDRESS = "0.0.0.0";

/**
 * One target in tgt's own config format (tgt-admin / targets.conf), so that tgt's
 * service brings the target back after a reboot of the server without bootfleet.
 * Values are validated beforehand (see validate.ts): none holds whitespace, '#',
 * '<', '>' or a quote, which Config::General and tgt-admin's shell would read.
 */
export function renderTgtConf(spec: TargetSpec): string {
  const lines = [
    "# Written by bootfleet, one file per target; changes here are overwritten.",
    `<target ${spec.iqn}>`,
    // Shared read-only disks (games) back many targets: without this, tgt-admin skips a
    // backing store that another target of the same tgtd already has open.
    "    allow-in-use yes",
  ];
  for (const l of [...spec.luns].sort((a, b) => a.lun - b.lun)) {
    lines.push(`    <backing-store ${l.path}>`);
    lines.push(`        lun ${l.lun}`);
    lines.push(`        scsi_sn ${l.wwn}`);
    lines.push(`        scsi_id ${l.wwn}`);
    if (l.readOnly) lines.push("        readonly 1");
    lines.push("    </backing-store>");
  }
  lines.push(`    incominguser ${spec.acl.chapUser} ${spec.acl.chapPassword}`);
  if (spec.acl.mutualUser && spec.acl.mutualPassword) {
    lines.push(`    outgoinguser ${spec.acl.mutualUser} ${spec.acl.mutualPassword}`);
  }
  // tgt-admin binds ALL addresses unless an initiator-address is given, and tgt admits an
  // initiator when its address OR its name matches. 0.0.0.0 is never a TCP peer's
  // address, so only the initiator-name line lets anyone in.
  lines.push(`    initiator-address ${TGT_NO_ADDRESS}`);
  lines.push(`    initiator-name ${spec.acl.initiatorIqn}`);
  lines.push("</target>", "");
  return lines.join("\n");
}

/** What a file written by {@link renderTgtConf} says; `undefined` when it is not one. */
export interface TgtConfView {
  iqn: string;
  luns: { lun: number; path: string; wwn: string; readOnly: boolean }[];
  incoming: { user: string; password: string }[];
  outgoing: { user: string; password: string }[];
  initiatorNames: string[];
  initiatorAddresses: string[];
}

export function parseTgtConf(text: string): TgtConfView | undefined {
  let view: TgtConfView | undefined;
  let store: { lun: number; path: string; wwn: string; readOnly: boolean } | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (line === "") continue;
    let m = /^<target (\S+)>$/.exec(line);
    if (m) {
      if (view) return undefined;
      view = {
        iqn: m[1] ?? "",
        luns: [],
        incoming: [],
        outgoing: [],
        initiatorNames: [],
        initiatorAddresses: [],
      };
      continue;
    }
    if (!view) continue;
    m = /^<backing-store (\S+)>$/.exec(line);
    if (m) {
      store = { lun: -1, path: m[1] ?? "", wwn: "", readOnly: false };
      continue;
    }
    if (line === "</backing-store>") {
      if (store) view.luns.push(store);
      store = undefined;
      continue;
    }
    const [key, ...rest] = line.split(/\s+/);
    if (store) {
      if (key === "lun") store.lun = Number(rest[0]);
      else if (key === "scsi_sn") store.wwn = rest[0] ?? "";
      else if (key === "readonly") store.readOnly = rest[0] === "1";
      continue;
    }
    if (key === "incominguser" && rest.length === 2)
      view.incoming.push({ user: rest[0] ?? "", password: rest[1] ?? "" });
    else if (key === "outgoinguser" && rest.length === 2)
      view.outgoing.push({ user: rest[0] ?? "", password: rest[1] ?? "" });
    else if (key === "initiator-name" && rest[0]) view.initiatorNames.push(rest[0]);
    else if (key === "initiator-address" && rest[0]) view.initiatorAddresses.push(rest[0]);
  }
  return view;
}

/** The config file of a target inside the conf folder: its IQN, so each target owns one file. */
export function tgtConfFileName(iqn: string): string {
  return `${iqn}.conf`;
}
