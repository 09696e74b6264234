/** What `tgtadm --op show --mode target` says about one target. */
export interface TgtTargetView {
  tid: number;
  iqn: string;
  state: string;
  nexuses: { nexus: number; initiator: string; addresses: string[] }[];
  luns: {
    lun: number;
    type: string;
    scsiId: string;
    scsiSn: string;
    readOnly: boolean;
    backingStoreType: string;
    backingStorePath: string;
  }[];
  incomingUsers: string[];
  outgoingUsers: string[];
  /** Initiator names and addresses together: tgtadm prints both kinds in one list. */
  acl: string[];
}

type Section = "system" | "nexus" | "lun" | "account" | "acl" | null;

/**
 * Parses tgtadm's human-readable listing (tgt 1.0.x; there is no machine format).
 * Sections are recognised by their heading and fields by their label, so an extra
 * field in a later tgt is ignored rather than misread.
 */
export function parseTgtShowTargets(text: string): TgtTargetView[] {
  const targets: TgtTargetView[] = [];
  let cur: TgtTargetView | undefined;
  let section: Section = null;
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (line.trim() === "") continue;
    const head = /^Target (\d+): (\S+)$/.exec(line);
    if (head) {
      cur = {
        tid: Number(head[1]),
        iqn: head[2] ?? "",
        state: "",
        nexuses: [],
        luns: [],
        incomingUsers: [],
        outgoingUsers: [],
        acl: [],
      };
      targets.push(cur);
      section = null;
      continue;
    }
    if (!cur) continue;
    const t = line.trim();
    const indent = line.length - line.trimStart().length;
    if (indent === 4) {
      section =
        t === "System information:"
          ? "system"
          : t === "I_T nexus information:"
            ? "nexus"
            : t === "LUN information:"
              ? "lun"
              : t === "Account information:"
                ? "account"
                : t === "ACL information:"
                  ? "acl"
                  : null;
      continue;
    }
    switch (section) {
      case "system": {
        const m = /^State: (.*)$/.exec(t);
        if (m) cur.state = m[1] ?? "";
        break;
      }
      case "nexus": {
        let m = /^I_T nexus: (\d+)$/.exec(t);
        if (m) {
          cur.nexuses.push({ nexus: Number(m[1]), initiator: "", addresses: [] });
          break;
        }
        const n = cur.nexuses.at(-1);
        if (!n) break;
        m = /^Initiator: (\S+)/.exec(t);
        if (m) n.initiator = m[1] ?? "";
        m = /^IP Address: (\S+)$/.exec(t);
        if (m) n.addresses.push(m[1] ?? "");
        break;
      }
      case "lun": {
        const m = /^LUN: (\d+)$/.exec(t);
        if (m) {
          cur.luns.push({
            lun: Number(m[1]),
            type: "",
            scsiId: "",
            scsiSn: "",
            readOnly: false,
            backingStoreType: "",
            backingStorePath: "",
          });
          break;
        }
        const l = cur.luns.at(-1);
        if (!l) break;
        const colon = t.indexOf(":");
        if (colon < 0) break;
        const key = t.slice(0, colon);
        const value = t.slice(colon + 1).trim();
        if (key === "Type") l.type = value;
        else if (key === "SCSI ID") l.scsiId = value;
        else if (key === "SCSI SN") l.scsiSn = value;
        else if (key === "Readonly") l.readOnly = value === "Yes";
        else if (key === "Backing store type") l.backingStoreType = value;
        else if (key === "Backing store path") l.backingStorePath = value;
        break;
      }
      case "account": {
        const m = /^(\S+) \(outgoing\)$/.exec(t);
        if (m) cur.outgoingUsers.push(m[1] ?? "");
        else cur.incomingUsers.push(t);
        break;
      }
      case "acl":
        cur.acl.push(t);
        break;
      default:
        break;
    }
  }
  return targets;
}

/** Parses `tgtadm --op show --mode portal`: "Portal: 127.0.0.1:3260,1" lines. */
/** One portal tgtd listens on. */
export interface TgtPortalView {
  address: string;
  port: number;
}

export function parseTgtShowPortals(text: string): TgtPortalView[] {
  const out: { address: string; port: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^Portal: (.+):(\d+),\d+$/.exec(line.trim());
    if (!m) continue;
    const host = m[1] ?? "";
    out.push({ address: host.replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]) });
  }
  return out;
}

/** Parses `tgtadm --op show --mode account`: "Account list:" then one name a line. */
export function parseTgtShowAccounts(text: string): string[] {
  const out: string[] = [];
  let inList = false;
  for (const line of text.split("\n")) {
    if (line.trim() === "Account list:") {
      inList = true;
      continue;
    }
    if (inList && line.trim() !== "") out.push(line.trim());
  }
  return out;
}
