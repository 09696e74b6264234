// The data each kind of boot script is rendered from, and how it becomes a view of values
// that are safe to put in a script (see values.ts for why each value is encoded as it is).

import { TrustedCode, type View } from "./template.js";
import {
  displayText,
  driveNumber,
  exactArgumentText,
  hostName,
  httpUrl,
  imageName,
  integer,
  ipv4,
  iscsiName,
  lun,
  macAddress,
  port,
  ScriptValueError,
  secretText,
} from "./values.js";

export const SCRIPT_KINDS = ["sanboot", "menu", "local", "kernel", "discovery", "custom"] as const;
export type ScriptKind = (typeof SCRIPT_KINDS)[number];

export interface IscsiDisk {
  /** Address of the iSCSI portal. */
  server: string;
  /** Defaults to 3260. */
  port?: number;
  lun: number;
  targetIqn: string;
}

export interface ChapCredentials {
  username: string;
  password: string;
}

export interface SanbootData {
  /** Shown on screen, e.g. the machine's name. */
  name: string;
  /** The booted OS's host name (through the iBFT); defaults to one made from name. */
  hostname?: string;
  initiatorIqn: string;
  /** The target authenticates the initiator with these (each machine has its own). */
  chap: ChapCredentials;
  /** Mutual CHAP: the initiator authenticates the target with these. */
  mutualChap?: ChapCredentials;
  /** The disk the machine boots, hooked as BIOS drive 0x80. */
  system: IscsiDisk;
  /** More disks, hooked before booting as drives 0x81, 0x82, ... */
  extraDisks?: IscsiDisk[];
  /** How long the failure prompt waits before retrying. Defaults to 30 s. */
  retryTimeoutMs?: number;
}

export interface MenuItem {
  label: string;
  /** The script to chain when chosen (a URL built by bootfleet). */
  url: string;
}

export interface MenuData {
  title: string;
  items: MenuItem[];
  /** Index into items; defaults to 0. */
  defaultIndex?: number;
  /** Defaults to 10 s. 0 waits for a key forever. */
  timeoutMs?: number;
}

export interface LocalData {
  name: string;
}

export interface KernelData {
  name: string;
  kernelUrl: string;
  /** Loaded in this order; name defaults to initrd0, initrd1, ... */
  initrds?: { url: string; name?: string }[];
  cmdline?: string;
  retryTimeoutMs?: number;
}

export interface DiscoveryData {
  mac: string;
  /** Where this machine fetches its script again (a fresh binding token in it). */
  scriptUrl: string;
  /** Pause between attempts. Defaults to 15 s. */
  retrySeconds?: number;
  /** Shown under the MAC. */
  message?: string;
}

export interface CustomData {
  /** Admin-written iPXE script, served as written. */
  script: string;
}

export interface ScriptData {
  sanboot: SanbootData;
  menu: MenuData;
  local: LocalData;
  kernel: KernelData;
  discovery: DiscoveryData;
  custom: CustomData;
}

const MAX_EXTRA_DISKS = 8;
const MAX_MENU_ITEMS = 32;
// x86 Linux COMMAND_LINE_SIZE.
const MAX_CMDLINE = 2048;

function record(field: string, value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ScriptValueError(field, "must be an object");
  }
  return value as Record<string, unknown>;
}

function list(field: string, value: unknown, max: number, min = 0): unknown[] {
  if (value === undefined && min === 0) return [];
  if (!Array.isArray(value)) throw new ScriptValueError(field, "must be a list");
  if (value.length < min || value.length > max) {
    throw new ScriptValueError(field, `must hold ${min} to ${max} entries`);
  }
  return value;
}

function iscsiUri(field: string, value: unknown): { uri: string; server: string; iqn: string } {
  const d = record(field, value);
  const server = ipv4(`${field}.server`, d.server);
  const p = port(`${field}.port`, d.port ?? 3260);
  const l = lun(`${field}.lun`, d.lun);
  const iqn = iscsiName(`${field}.targetIqn`, d.targetIqn);
  // iscsi:<server>:<protocol>:<port>:<lun>:<target>; protocol empty means TCP.
  return { uri: `iscsi:${server}::${p}:${l}:${iqn}`, server, iqn };
}

function sanbootView(data: SanbootData): View {
  const d = record("data", data);
  const chap = record("chap", d.chap);
  const mutual = d.mutualChap === undefined ? undefined : record("mutualChap", d.mutualChap);
  const system = iscsiUri("system", d.system);
  const extraDisks = list("extraDisks", d.extraDisks, MAX_EXTRA_DISKS).map((disk, i) => ({
    drive: driveNumber(`extraDisks[${i}]`, 0x81 + i),
    uri: iscsiUri(`extraDisks[${i}]`, disk).uri,
  }));
  return {
    name: displayText("name", d.name),
    hostname: hostName("hostname", d.hostname ?? d.name),
    initiatorIqn: iscsiName("initiatorIqn", d.initiatorIqn),
    chapUsername: secretText("chap.username", chap.username),
    chapPassword: secretText("chap.password", chap.password),
    mutual: mutual !== undefined,
    reverseUsername: mutual ? secretText("mutualChap.username", mutual.username) : "",
    reversePassword: mutual ? secretText("mutualChap.password", mutual.password) : "",
    systemUri: system.uri,
    systemServer: system.server,
    systemTarget: system.iqn,
    extraDisks,
    retryTimeoutMs: integer("retryTimeoutMs", d.retryTimeoutMs ?? 30_000, 1000, 3_600_000),
  };
}

function menuView(data: MenuData): View {
  const d = record("data", data);
  const items = list("items", d.items, MAX_MENU_ITEMS, 1).map((raw, i) => {
    const item = record(`items[${i}]`, raw);
    return {
      index: String(i),
      label: displayText(`items[${i}].label`, item.label, 200),
      url: httpUrl(`items[${i}].url`, item.url),
    };
  });
  return {
    title: displayText("title", d.title),
    items,
    defaultIndex: integer("defaultIndex", d.defaultIndex ?? 0, 0, items.length - 1),
    timeoutMs: integer("timeoutMs", d.timeoutMs ?? 10_000, 0, 3_600_000),
  };
}

function localView(data: LocalData): View {
  const d = record("data", data);
  return { name: displayText("name", d.name) };
}

function kernelView(data: KernelData): View {
  const d = record("data", data);
  const initrds = list("initrds", d.initrds, 16).map((raw, i) => {
    const initrd = record(`initrds[${i}]`, raw);
    return {
      url: httpUrl(`initrds[${i}].url`, initrd.url),
      initrdName: imageName(`initrds[${i}].name`, initrd.name ?? `initrd${i}`),
    };
  });
  const names = new Set(initrds.map((x) => x.initrdName));
  if (names.size !== initrds.length) throw new ScriptValueError("initrds", "names must differ");
  return {
    name: displayText("name", d.name),
    kernelUrl: httpUrl("kernelUrl", d.kernelUrl),
    initrds,
    cmdline: exactArgumentText("cmdline", d.cmdline ?? "", MAX_CMDLINE),
    retryTimeoutMs: integer("retryTimeoutMs", d.retryTimeoutMs ?? 30_000, 1000, 3_600_000),
  };
}

function discoveryView(data: DiscoveryData): View {
  const d = record("data", data);
  return {
    mac: macAddress("mac", d.mac),
    scriptUrl: httpUrl("scriptUrl", d.scriptUrl),
    retrySeconds: integer("retrySeconds", d.retrySeconds ?? 15, 1, 3600),
    message: displayText(
      "message",
      d.message ?? "Waiting for an administrator to assign it; nothing to do at this PC.",
    ),
  };
}

function customView(data: CustomData): View {
  const d = record("data", data);
  const script = d.script;
  if (typeof script !== "string") throw new ScriptValueError("script", "must be a string");
  // iPXE only runs a downloaded file as a script when it starts with this magic line.
  if (!/^#!ipxe[ \t]*\r?\n/.test(script)) {
    throw new ScriptValueError("script", 'must start with a "#!ipxe" line');
  }
  return { script: new TrustedCode(script) };
}

export const VIEW_BUILDERS: { [K in ScriptKind]: (data: ScriptData[K]) => View } = {
  sanboot: sanbootView,
  menu: menuView,
  local: localView,
  kernel: kernelView,
  discovery: discoveryView,
  custom: customView,
};
