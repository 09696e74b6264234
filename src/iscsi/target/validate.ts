import { isIP } from "node:net";
import type { TargetSpec } from "./types.js";

/** RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes. */
export const ISCSI_NAME_MAX_BYTES = 223;

// Only the ASCII subset of what RFC 3722 stringprep leaves; anything else would be
// escaped differently by each tool (configfs path, tgt config, iPXE script).
const IQN_PREFIX_RE =
  /^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const IQN_RE = /^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[a-z0-9.:-]+)?$/;
const EUI_RE = /^eui\.[0-9a-fA-F]{16}$/;
const NAA_RE = /^naa\.[0-9a-fA-F]{16}([0-9a-fA-F]{16})?$/;

// CHAP user and secret end up in a tgt config file (parsed by Config::General and
// then put on a shell command line by tgt-admin), in configfs attributes and in iPXE
// URIs: a conservative alphabet keeps all of them literal.
const CHAP_USER_RE = /^[A-Za-z0-9._:-]{1,255}$/;
const CHAP_SECRET_RE = /^[A-Za-z0-9._+-]{12,255}$/;
// Paths go into LIO's comma-separated control string and tgt's whitespace-separated config.
const PATH_RE = /^\/[A-Za-z0-9._/+@:=-]*$/;
// tgt keeps at most 36 bytes of scsi_sn/scsi_id; a UUID fits exactly.
const WWN_RE = /^[A-Za-z0-9-]{1,36}$/;

function byteLength(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

export function isValidIqn(iqn: string): boolean {
  return IQN_RE.test(iqn) && byteLength(iqn) <= ISCSI_NAME_MAX_BYTES;
}

/** iqn., eui. or naa. name, as initiators (iPXE, Windows, open-iscsi) present themselves. */
export function isValidInitiatorName(name: string): boolean {
  return (
    byteLength(name) <= ISCSI_NAME_MAX_BYTES &&
    (IQN_RE.test(name) || EUI_RE.test(name) || NAA_RE.test(name))
  );
}

export function isValidIqnPrefix(prefix: string): boolean {
  return IQN_PREFIX_RE.test(prefix) && byteLength(prefix) < ISCSI_NAME_MAX_BYTES;
}

export function isUnderPrefix(iqn: string, prefix: string): boolean {
  return iqn.startsWith(`${prefix}:`);
}

/** Every secret in a spec, so that command errors can be scrubbed of them. */
export function secretsOf(spec: TargetSpec): string[] {
  const out = [spec.acl.chapPassword];
  if (spec.acl.mutualPassword) out.push(spec.acl.mutualPassword);
  return out;
}

/**
 * Checks everything a driver is about to put into configfs, tgtadm arguments or a
 * config file. Returns the list of problems (empty when valid); no problem text
 * contains a secret.
 */
export function specProblems(spec: TargetSpec, firstLun: 0 | 1): string[] {
  const p: string[] = [];
  if (!isValidIqn(spec.iqn)) p.push(`iqn ${JSON.stringify(spec.iqn)} is not a valid IQN`);
  if (isIP(spec.portal.address) === 0)
    p.push(`portal address ${JSON.stringify(spec.portal.address)} is not an IP address`);
  if (!Number.isInteger(spec.portal.port) || spec.portal.port < 1 || spec.portal.port > 65535)
    p.push(`portal port ${spec.portal.port} is not in 1-65535`);
  if (spec.luns.length === 0) p.push("no LUNs");
  const seen = new Set<number>();
  for (const l of spec.luns) {
    const at = `lun ${l.lun}`;
    if (!Number.isInteger(l.lun) || l.lun < firstLun || l.lun > 255)
      p.push(`${at}: number must be an integer in ${firstLun}-255`);
    if (seen.has(l.lun)) p.push(`${at}: appears twice`);
    seen.add(l.lun);
    if (!PATH_RE.test(l.path) || l.path.split("/").includes(".."))
      p.push(`${at}: path ${JSON.stringify(l.path)} must be absolute, of [A-Za-z0-9._/+@:=-]`);
    if (l.kind !== "file" && l.kind !== "block") p.push(`${at}: kind must be file or block`);
    if (typeof l.readOnly !== "boolean") p.push(`${at}: readOnly must be a boolean`);
    if (!Number.isSafeInteger(l.sizeBytes) || l.sizeBytes <= 0 || l.sizeBytes % 512 !== 0)
      p.push(`${at}: sizeBytes must be a positive multiple of 512`);
    if (!WWN_RE.test(l.wwn)) p.push(`${at}: wwn must be 1-36 characters of [A-Za-z0-9-]`);
  }
  const a = spec.acl;
  if (!isValidInitiatorName(a.initiatorIqn))
    p.push(`initiator ${JSON.stringify(a.initiatorIqn)} is not a valid iSCSI name`);
  if (!CHAP_USER_RE.test(a.chapUser))
    p.push("chapUser must be 1-255 characters of [A-Za-z0-9._:-]");
  if (!CHAP_SECRET_RE.test(a.chapPassword))
    p.push("chapPassword must be 12-255 characters of [A-Za-z0-9._+-]");
  const hasMutualUser = a.mutualUser !== undefined && a.mutualUser !== "";
  const hasMutualPassword = a.mutualPassword !== undefined && a.mutualPassword !== "";
  if (hasMutualUser !== hasMutualPassword) p.push("mutualUser and mutualPassword go together");
  if (hasMutualUser && !CHAP_USER_RE.test(a.mutualUser ?? ""))
    p.push("mutualUser must be 1-255 characters of [A-Za-z0-9._:-]");
  if (hasMutualPassword && !CHAP_SECRET_RE.test(a.mutualPassword ?? ""))
    p.push("mutualPassword must be 12-255 characters of [A-Za-z0-9._+-]");
  // RFC 3720 8.2.1: the secret of each direction must differ, or a reflection works.
  if (hasMutualPassword && a.mutualPassword === a.chapPassword)
    p.push("mutualPassword must differ from chapPassword");
  return p;
}
