import { stringify as stringifyToml } from "smol-toml";
import * as z from "zod";
import { configSchema, defaultConfig, INSTALLED_RECIPES_DIR } from "../config/config.js";
import type { Privileges } from "../host/privileges.js";

/**
 * The packaged daemon runs as root (its unit bounds the capabilities), so the conffile
 * shows root's defaults: /var/lib/bootfleet, port 80, TFTP on 69, proxy-DHCP on.
 */
const PACKAGED: Privileges = { isRoot: true, canBindLowPorts: true, canUseRawSockets: true };

/** What the conffile says about one key. */
interface KeyDoc {
  /** One line: what the key is for. */
  about: string;
  /**
   * For a default computed at start (from data_dir or the machine's network): the rule,
   * and an example value shown instead of the empty placeholder the schema holds.
   */
  computed?: { rule: string; example: (defaults: Plain) => unknown };
}

type Plain = Record<string, unknown>;

/** Marks a shown value as an example of a computed default, not the default itself. */
export const COMPUTED_MARKER = "# default:";

const SECTION_DOCS: Record<string, string> = {
  http: "The REST API, the iPXE boot scripts and UEFI HTTP boot.",
  api: "Limits of the REST API.",
  images:
    "Image uploads through the API, images built from recipes, and the drop folder that imports copied files.",
  netboot: "Where PXE clients are served.",
  tftp: "TFTP: iPXE binaries for PXE firmware.",
  dhcp: "Proxy-DHCP: boot offers beside the site's own DHCP server.",
  iscsi: "iSCSI targets and the per-machine copy-on-write overlays behind them.",
  storage: "Disk space kept free for the machines that are running.",
  fleet: "The fleet's live state: when a boot counts as stalled.",
  store: "The SQLite database.",
  log: "Logging (JSON lines on stdout, to the journal under systemd).",
  shutdown: "Stopping (SIGTERM, systemctl stop).",
};

const underDataDir =
  (name: string) =>
  (d: Plain): string =>
    `${String(d.data_dir)}/${name}`;

/**
 * One entry per key of configSchema, by dotted path. renderConfigTemplate refuses to
 * render when a key has no entry, so a new key cannot reach the conffile undocumented.
 */
const KEY_DOCS: Record<string, KeyDoc> = {
  data_dir: { about: "The database, signing keys, the one-time admin password and other state." },
  images_dir: {
    about: "The golden image library.",
    computed: { rule: "<data_dir>/images", example: underDataDir("images") },
  },
  "http.listen": {
    about: 'Address and port to listen on (":PORT" is every address).',
  },
  "http.socket": {
    about:
      "The local API socket of the bootfleet command (mode 0660 with group bootfleet, else 0600): whoever can open it acts as admin.",
    computed: {
      rule: "root: /run/bootfleet/api.sock; otherwise <data_dir>/api.sock",
      example: underDataDir("api.sock"),
    },
  },
  "images.upload_max_bytes": {
    about: "Largest image upload accepted, in bytes (200 GiB; larger uploads get 413).",
  },
  "images.keep_versions": {
    about:
      "Versions of each image kept after a commit; older ones are deleted by a job, never one in use (current, pinned, under an overlay or a draft).",
  },
  "images.recipes_dir": {
    about:
      "The image recipes that POST /api/images/build and `bootfleet image build` can run, one folder each (see its README.md); only these run.",
    computed: {
      rule: "the package's recipes: /usr/share/bootfleet/images (images/ of a checkout when run from one)",
      example: () => INSTALLED_RECIPES_DIR,
    },
  },
  "images.build_cache_dir": {
    about:
      "Recipe builds, kept by the recipe's content hash (an unchanged recipe builds at once), and the work folders of builds running.",
    computed: { rule: "<data_dir>/build-cache", example: underDataDir("build-cache") },
  },
  "images.import_enabled": {
    about:
      "Import the disk images (.raw .img .qcow2 .vmdk .vhdx) copied into import_dir, through the same job as an upload.",
  },
  "images.import_dir": {
    about:
      "The drop folder: on the file system of images_dir (a file is moved, not copied); never images_dir itself. Files that fail go to its failed/ subfolder.",
    computed: { rule: "<images_dir>/import", example: underDataDir("images/import") },
  },
  "images.import_stable_ms": {
    about:
      "How long a dropped file must keep its size, with no process holding it open for writing, before it is imported.",
  },
  "netboot.interfaces": {
    about: "Interfaces whose LAN proxy-DHCP serves.",
    computed: { rule: "the interface of the default route", example: () => ["eth0"] },
  },
  "netboot.server_address": {
    about: "Address handed to clients for TFTP, HTTP and iSCSI.",
    computed: { rule: "the IPv4 address of the first interface", example: () => "192.0.2.10" },
  },
  "netboot.routed_subnets": {
    about:
      'Subnets behind a DHCP relay allowed to boot (e.g. ["10.20.0.0/24"]); their machines get a script only at their fixed address.',
  },
  "netboot.menu_timeout_seconds": {
    about:
      "Seconds a boot menu (a machine with several targets) waits before booting its default entry, where neither the machine nor its room sets it (1-240).",
  },
  "netboot.templates_dir": {
    about:
      "Site overrides of the boot script templates (sanboot.ipxe, menu.ipxe, ...), reloaded when they change; one that does not parse is refused and the previous kept. Empty: the built-in ones.",
  },
  "tftp.enabled": { about: "Serve TFTP." },
  "tftp.port": { about: "UDP port of the TFTP server." },
  "tftp.root": {
    about: "Extra files served over TFTP, beside the iPXE binaries below.",
    computed: { rule: "<data_dir>/tftp", example: underDataDir("tftp") },
  },
  "tftp.ipxe_bios": { about: "iPXE for BIOS clients (Debian package ipxe)." },
  "tftp.ipxe_efi_x64": {
    about: "iPXE for x64 UEFI clients (ipxe.efi carries its own NIC drivers instead).",
  },
  "tftp.ipxe_efi_arm64": { about: "iPXE for ARM64 UEFI clients; empty: not served." },
  "tftp.max_transfers": { about: "Concurrent TFTP transfers." },
  "dhcp.enabled": { about: "Answer PXE clients as proxy-DHCP (ports 67 and 4011)." },
  "dhcp.mode": { about: "Only proxy mode: bootfleet never hands out addresses." },
  "dhcp.reply_delay_ms": {
    about: "Wait before answering, in ms (some firmware breaks on instant replies).",
  },
  "dhcp.chainload_nic_ipxe": {
    about: "Hand a NIC's own iPXE ROM bootfleet's iPXE over TFTP once, before its script.",
  },
  "iscsi.target_driver": {
    about: 'Target driver: "lio" (kernel), "tgt" (tgtd) or "auto" (LIO when present).',
  },
  "iscsi.overlay_driver": {
    about:
      'Overlay driver: "auto" (dm-snapshot with LIO where the kernel has device-mapper snapshots and loop, else reflink), "dm-snapshot" (machines share the image\'s page cache), "reflink" (XFS or btrfs clones) or "lvm-thin" (thin snapshots).',
  },
  "iscsi.overlays_dir": {
    about: "Where reflink overlays live (on the same file system as images_dir).",
    computed: { rule: "<data_dir>/overlays", example: underDataDir("overlays") },
  },
  "iscsi.portal_port": { about: "TCP port of the iSCSI portal." },
  "iscsi.portal_address": {
    about: "Address of the iSCSI portal given to clients.",
    computed: { rule: "[netboot] server_address", example: () => "192.0.2.10" },
  },
  "iscsi.iqn_prefix": { about: "Prefix of the target and initiator names (IQNs)." },
  "iscsi.tgt_control_port": { about: "Control port of the running tgtd (tgtadm -C)." },
  "iscsi.tgt_conf_dir": {
    about: "Where the tgt driver saves targets for tgt.service to restore at boot.",
  },
  "iscsi.lio_saveconfig": {
    about: "The LIO configuration that rtslib-fb-targetctl restores at boot.",
  },
  "iscsi.lvm_volume_group": {
    about: "Volume group holding the thin pool, for the lvm-thin overlay driver.",
  },
  "iscsi.warm_max_mib": {
    about:
      "Boot-set warming with dm-snapshot overlays: at most this many MiB of each current image version's recorded boot set (<version file>.bootset.csv) are read into the page cache at start and when a version becomes current; 0 turns it off.",
  },
  "iscsi.boot_set_record_seconds": {
    about:
      "Boot-set recording with dm-snapshot overlays: the first boot of an image version that has no <version file>.bootset.csv is counted (device-mapper statistics on that machine's disk) for this many seconds, or until its disk goes, and the areas it read are written as that file, which warming then reads; a file already there is never replaced; 0 turns it off.",
  },
  "iscsi.session_poll_ms": { about: "How often iSCSI logins are read for boot sessions, in ms." },
  "api.rate_limit_per_minute": {
    about:
      "Requests per minute per user (per address before login) on the API's general routes; 0 turns the limit off. Logins and uploads keep their own limits.",
  },
  "storage.reserve_percent": {
    about:
      "Percent of the image and overlay file systems kept free: uploads, new overlays and new versions are refused below it (0 turns it off).",
  },
  "fleet.stall_timeout_seconds": {
    about:
      "Seconds a boot may sit in one phase (script served but no iSCSI login, logged in but nothing read, ...) before the machine is shown stalled and an alert names the phase and the likely causes.",
  },
  "store.busy_timeout_ms": {
    about: "How long to wait for a database lock held by another process, in ms.",
  },
  "log.level": {
    about: "fatal, error, warn, info, debug, trace or silent (applied on reload).",
  },
  "shutdown.drain_timeout_ms": {
    about: "How long requests in flight may take to finish on SIGTERM, in ms.",
  },
};

const HEADER = `# bootfleetd configuration (TOML).
#
# Every key is shown commented out with the default the packaged daemon uses; a default
# computed at start is shown as an example value followed by "${COMPUTED_MARKER}" and its rule.
# To change a key, uncomment it under its [section]. The environment variable
# BOOTFLEET_<SECTION>_<KEY> (BOOTFLEET_<KEY> outside a section) wins over this file.
#
# The effective configuration, secrets masked: sudo bootfleetd --print-config
# Apply [log] level and [dhcp] reply_delay_ms: sudo systemctl reload bootfleetd
# Apply any other change:                      sudo systemctl restart bootfleetd
# An invalid file is refused as a whole, naming the key: a reload keeps the running
# values, a start fails (journalctl -u bootfleetd says why).
`;

/** Every key path of the schema, in schema order: top-level keys first, then sections. */
export function configKeyPaths(): string[][] {
  const out: string[][] = [];
  const sections: string[][] = [];
  for (const [key, schema] of Object.entries(configSchema.shape)) {
    if (schema instanceof z.ZodObject) {
      for (const sub of Object.keys(schema.shape)) sections.push([key, sub]);
    } else {
      out.push([key]);
    }
  }
  return [...out, ...sections];
}

/** `key = value` in TOML syntax. */
function assignment(key: string, value: unknown): string {
  return stringifyToml({ [key]: value }).trimEnd();
}

/**
 * The conffile /etc/bootfleet/bootfleetd.toml: every key of the schema, commented out
 * with its default, under its [section] header. Loaded as is it yields exactly the
 * embedded defaults (the headers alone are empty tables).
 */
export function renderConfigTemplate(): string {
  const defaults = defaultConfig(PACKAGED);
  const missing = configKeyPaths()
    .map((p) => p.join("."))
    .filter((p) => KEY_DOCS[p] === undefined);
  if (missing.length) {
    throw new Error(`config-template: no description for ${missing.join(", ")}`);
  }

  const lines = [HEADER];
  let section: string | undefined;
  for (const path of configKeyPaths()) {
    const key = path[path.length - 1]!;
    if (path.length === 2 && path[0] !== section) {
      section = path[0]!;
      const about = SECTION_DOCS[section];
      if (about === undefined) throw new Error(`config-template: no description for [${section}]`);
      lines.push(`# ${about}`, `[${section}]`);
    }
    const doc = KEY_DOCS[path.join(".")]!;
    lines.push(`# ${doc.about}`);
    if (doc.computed) {
      const example = assignment(key, doc.computed.example(defaults));
      lines.push(`# ${example}   ${COMPUTED_MARKER} ${doc.computed.rule}`);
    } else {
      lines.push(`# ${assignment(key, valueAt(defaults, path))}`);
    }
    lines.push("");
  }
  return `${lines.join("\n").trimEnd()}\n`;
}

function valueAt(obj: Plain, path: string[]): unknown {
  let cur: unknown = obj;
  for (const p of path) cur = (cur as Plain)[p];
  if (cur === undefined) throw new Error(`config-template: no default for ${path.join(".")}`);
  return cur;
}
