import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { parse as parseToml, stringify as stringifyToml } from "smol-toml";
import * as z from "zod";
import { defaultRouteInterface, interfaceIPv4 } from "../host/interfaces.js";
import type { Privileges } from "../host/privileges.js";

export const DEFAULT_CONFIG_PATH = "/etc/bootfleet/bootfleetd.toml";

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** "host:port", ":port" (all addresses) or "[v6]:port". */
const listenSchema = z
  .string()
  .regex(
    /^(\[[0-9a-fA-F:.]+\]|[0-9A-Za-z.-]*):([0-9]{1,5})$/,
    'an address and port such as ":8080" or "10.99.0.1:80"',
  )
  .refine((v) => {
    const port = Number(v.slice(v.lastIndexOf(":") + 1));
    return port >= 0 && port <= 65535;
  }, "a port from 1 to 65535 (0: any free port)");

/** 0 asks the kernel for any free port (tests); the port chosen is logged. */
const portSchema = z.number().int().min(0).max(65535);
const ipv4Schema = z
  .string()
  .regex(/^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$/, "an IPv4 address");
const ifnameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_.:@-]{1,15}$/, "an interface name (1 to 15 letters, digits, . _ - : @)");
/** An IPv4 subnet in CIDR notation, its host bits zero ("10.20.0.0/24"). */
const subnetSchema = z
  .string()
  .regex(
    /^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)\/(3[0-2]|[12]?\d)$/,
    'an IPv4 subnet such as "10.20.0.0/24"',
  )
  .refine((v) => {
    const [address = "", bits = "0"] = v.split("/");
    const n = address.split(".").reduce((a, o) => a * 256 + Number(o), 0);
    return n % 2 ** (32 - Number(bits)) === 0;
  }, 'a subnet with its host bits zero, such as "10.20.0.0/24"');
const pathSchema = z.string().min(1, "a path");
/** A path whose empty default means "derived from data_dir". */
const derivedPathSchema = z.string();

/**
 * The configuration schema. Every key has a default, so the daemon runs with no file.
 * Defaults that depend on the machine (privileges, default route) are filled in by
 * `defaultConfig` before validation, so what `--print-config` shows is what runs.
 */
export const configSchema = z
  .object({
    data_dir: pathSchema,
    images_dir: derivedPathSchema,
    http: z.object({ listen: listenSchema, socket: derivedPathSchema }).strict(),
    api: z
      .object({
        /**
         * Requests per minute per user (or per address before login) for the API's general
         * routes; 0 turns the limit off (a benchmark or a trusted automation network).
         */
        rate_limit_per_minute: z.number().int().min(0).max(1_000_000),
      })
      .strict(),
    images: z
      .object({
        /** Largest image upload accepted, in bytes (413 above it). */
        upload_max_bytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .max(2 ** 50),
        /** Versions kept per image by the retention job (besides every version in use). */
        keep_versions: z.number().int().min(1).max(1000),
        /** The image recipes that can be built (one folder each): packageRecipesDir(). */
        recipes_dir: derivedPathSchema,
        /** Recipe builds by content hash, and their work folders: <data_dir>/build-cache. */
        build_cache_dir: derivedPathSchema,
        /** Watch import_dir and import the disk images copied into it. */
        import_enabled: z.boolean(),
        /** The drop folder; empty: <images_dir>/import. */
        import_dir: derivedPathSchema,
        /**
         * How long a dropped file's size must stay the same (with no process holding it open
         * for writing) before it is imported.
         */
        import_stable_ms: z.number().int().min(100).max(3_600_000),
      })
      .strict(),
    netboot: z
      .object({
        interfaces: z.array(ifnameSchema),
        server_address: z.union([z.literal(""), ipv4Schema]),
        routed_subnets: z.array(subnetSchema),
        /**
         * How long a boot menu waits before its default entry, where neither the machine
         * nor its room sets it. At most 240 s: the menu's entry URLs are valid 5 minutes.
         */
        menu_timeout_seconds: z.number().int().min(1).max(240),
        /** Site overrides of the boot script templates (<kind>.ipxe); empty: none. */
        templates_dir: z.string(),
      })
      .strict(),
    tftp: z
      .object({
        enabled: z.boolean(),
        port: portSchema,
        root: derivedPathSchema,
        ipxe_bios: pathSchema,
        ipxe_efi_x64: pathSchema,
        ipxe_efi_arm64: z.string(),
        max_transfers: z.number().int().min(1).max(10000),
      })
      .strict(),
    dhcp: z
      .object({
        enabled: z.boolean(),
        mode: z.literal("proxy"),
        reply_delay_ms: z.number().int().min(0).max(10000),
        chainload_nic_ipxe: z.boolean(),
      })
      .strict(),
    iscsi: z
      .object({
        target_driver: z.enum(["auto", "lio", "tgt"]),
        overlay_driver: z.enum(["auto", "reflink", "lvm-thin", "dm-snapshot"]),
        overlays_dir: derivedPathSchema,
        portal_port: portSchema,
        portal_address: z.union([z.literal(""), ipv4Schema]),
        iqn_prefix: z
          .string()
          .regex(
            /^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*$/,
            'an IQN prefix such as "iqn.2024-01.io.bootfleet" (lowercase)',
          ),
        tgt_control_port: z.number().int().min(0).max(65535),
        tgt_conf_dir: pathSchema,
        lio_saveconfig: pathSchema,
        lvm_volume_group: z.string(),
        session_poll_ms: z.number().int().min(500).max(600000),
        warm_max_mib: z.number().int().min(0).max(1048576),
        boot_set_record_seconds: z.number().int().min(0).max(86400),
      })
      .strict(),
    storage: z
      .object({
        /**
         * Share of the image and overlay file systems kept free for running machines'
         * overlays: uploads, new overlays and new versions are refused below it.
         */
        reserve_percent: z.number().min(0).max(50),
      })
      .strict(),
    fleet: z
      .object({
        /**
         * How long a boot may sit in one phase (got its script but no iSCSI login, logged
         * in but no I/O, ...) before the machine is stalled and an alert raised.
         */
        stall_timeout_seconds: z.number().int().min(10).max(3600),
      })
      .strict(),
    store: z.object({ busy_timeout_ms: z.number().int().min(0).max(600000) }).strict(),
    log: z.object({ level: z.enum(LOG_LEVELS) }).strict(),
    shutdown: z.object({ drain_timeout_ms: z.number().int().min(0).max(600000) }).strict(),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;

/** Where a value came from, so an error can point the admin at the right place. */
export type ConfigSource = "default" | "file" | "environment";

export class ConfigError extends Error {
  override name = "ConfigError";
}

export interface LoadConfigOptions {
  /** A path given with --config: it must exist. Without it the default path is optional. */
  path?: string | undefined;
  env: Record<string, string | undefined>;
  privileges: Privileges;
  /** The working directory relative data_dir defaults resolve against. */
  cwd?: string;
  /** Overridable for tests: the machine's default-route interface and its IPv4. */
  detectInterface?: () => string | undefined;
  detectAddress?: (ifname: string) => string | undefined;
}

export interface LoadedConfig {
  config: Config;
  /** The file that was read, or undefined when the embedded defaults were used alone. */
  file: string | undefined;
  /**
   * Where each key set by the admin came from, by dotted path ("http.listen"); a key
   * absent here holds its default. Lets a default move where an explicit value must not.
   */
  sources: Readonly<Record<string, ConfigSource>>;
}

type Plain = Record<string, unknown>;

/** The embedded defaults for this machine. Derived keys (images_dir, ...) are filled later. */
export function defaultConfig(privileges: Privileges, detectedInterface?: string): Plain {
  const low = privileges.canBindLowPorts;
  return {
    data_dir: privileges.isRoot ? "/var/lib/bootfleet" : "./var",
    images_dir: "",
    http: {
      listen: low ? ":80" : ":8080",
      socket: "",
    },
    api: { rate_limit_per_minute: 100 },
    images: {
      upload_max_bytes: 200 * 1024 ** 3,
      keep_versions: 5,
      recipes_dir: "",
      build_cache_dir: "",
      import_enabled: true,
      import_dir: "",
      import_stable_ms: 10_000,
    },
    storage: { reserve_percent: 5 },
    fleet: { stall_timeout_seconds: 120 },
    netboot: {
      interfaces: detectedInterface ? [detectedInterface] : [],
      server_address: "",
      routed_subnets: [],
      menu_timeout_seconds: 10,
      templates_dir: "",
    },
    tftp: {
      enabled: true,
      port: low ? 69 : 6969,
      root: "",
      ipxe_bios: "/usr/lib/ipxe/undionly.kpxe",
      ipxe_efi_x64: "/usr/lib/ipxe/snponly.efi",
      ipxe_efi_arm64: "",
      max_transfers: 200,
    },
    dhcp: {
      enabled: low && privileges.canUseRawSockets,
      mode: "proxy",
      reply_delay_ms: 0,
      chainload_nic_ipxe: false,
    },
    iscsi: {
      target_driver: "auto",
      overlay_driver: "auto",
      overlays_dir: "",
      portal_port: 3260,
      portal_address: "",
      iqn_prefix: "iqn.2024-01.io.bootfleet",
      tgt_control_port: 0,
      tgt_conf_dir: "/etc/tgt/conf.d",
      lio_saveconfig: "/etc/rtslib-fb-target/saveconfig.json",
      lvm_volume_group: "",
      session_poll_ms: 5000,
      warm_max_mib: 1024,
      boot_set_record_seconds: 300,
    },
    store: { busy_timeout_ms: 5000 },
    log: { level: "info" },
    shutdown: { drain_timeout_ms: 10000 },
  };
}

/** Reads, merges (defaults < file < environment), validates and completes the configuration. */
export function loadConfig(opts: LoadConfigOptions): LoadedConfig {
  const detectInterface = opts.detectInterface ?? defaultRouteInterface;
  const detectAddress = opts.detectAddress ?? interfaceIPv4;
  const defaults = defaultConfig(opts.privileges, detectInterface());
  const sources = new Map<string, ConfigSource>();

  const path = opts.path ?? DEFAULT_CONFIG_PATH;
  let fileValues: Plain = {};
  let file: string | undefined;
  let text: string | undefined;
  try {
    text = readFileSync(path, "utf8");
    file = path;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (opts.path !== undefined || code !== "ENOENT") {
      throw new ConfigError(`cannot read configuration file ${path}: ${describeIoError(err)}`);
    }
  }
  if (text !== undefined) {
    try {
      fileValues = parseToml(text) as Plain;
    } catch (err) {
      throw new ConfigError(`configuration file ${path} is not valid TOML: ${firstLine(err)}`);
    }
    checkKnownKeys(fileValues, defaults, path);
  }

  const merged = structuredClone(defaults);
  mergeInto(merged, fileValues, "", "file", sources);
  applyEnvironment(merged, opts.env, sources);

  // jitless: zod would otherwise generate and compile a parser function for each of the
  // schema's objects on this first parse, to speed up parses that never come (one per start
  // and per SIGHUP): on the way to the daemon's first request (bench/footprint).
  const parsed = configSchema.safeParse(merged, { jitless: true });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = formatKey(issue.path.map(String));
    const value = getPath(merged, issue.path.map(String));
    const source = sources.get(issue.path.map(String).join(".")) ?? "default";
    const where =
      source === "environment"
        ? ` (from environment ${envName(issue.path.map(String))})`
        : source === "file"
          ? ` (in ${file})`
          : "";
    throw new ConfigError(
      `invalid configuration: ${key} = ${JSON.stringify(value)}${where}: expected ${describeExpected(issue)}`,
    );
  }
  return {
    config: complete(parsed.data, opts, detectAddress),
    file,
    sources: Object.fromEntries(sources),
  };
}

/** Where the package installs the recipes of images/ (debian/build-deb.sh). */
export const INSTALLED_RECIPES_DIR = "/usr/share/bootfleet/images";

/**
 * The recipes that come with this bootfleet. The code runs from a checkout (src/ or dist/
 * under it) or from the package (/usr/lib/bootfleet/dist); a checkout has its images/
 * two levels above this module, the package has none there and ships them, as data
 * (FHS), in /usr/share/bootfleet/images. So: images/ beside the code when it is there,
 * else the package's folder. Decided by what is on disk rather than by the code's path,
 * so a checkout anywhere and the package both find theirs without configuration.
 */
export function packageRecipesDir(moduleDir: string = import.meta.dirname): string {
  const beside = resolve(moduleDir, "../../images");
  return existsSync(beside) ? beside : INSTALLED_RECIPES_DIR;
}

/** Fills the keys whose defaults derive from others, and makes paths absolute. */
function complete(
  config: Config,
  opts: LoadConfigOptions,
  detectAddress: (ifname: string) => string | undefined,
): Config {
  const cwd = opts.cwd ?? process.cwd();
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(cwd, p));
  const c = structuredClone(config);
  c.data_dir = abs(c.data_dir);
  c.images_dir = abs(c.images_dir || join(c.data_dir, "images"));
  c.images.import_dir = abs(c.images.import_dir || join(c.images_dir, "import"));
  if (c.images.import_dir === c.images_dir) {
    // The library's own files (img-*.raw, uploads in progress) would be imported again.
    throw new ConfigError(
      `invalid configuration: [images] import_dir = ${JSON.stringify(c.images.import_dir)}: expected a folder other than images_dir (the default is <images_dir>/import)`,
    );
  }
  if (c.netboot.templates_dir) c.netboot.templates_dir = abs(c.netboot.templates_dir);
  c.tftp.root = abs(c.tftp.root || join(c.data_dir, "tftp"));
  c.http.socket = abs(
    c.http.socket ||
      (opts.privileges.isRoot ? "/run/bootfleet/api.sock" : join(c.data_dir, "api.sock")),
  );
  c.iscsi.overlays_dir = abs(c.iscsi.overlays_dir || join(c.data_dir, "overlays"));
  c.images.recipes_dir = abs(c.images.recipes_dir || packageRecipesDir());
  c.images.build_cache_dir = abs(c.images.build_cache_dir || join(c.data_dir, "build-cache"));
  if (!c.netboot.server_address && c.netboot.interfaces[0]) {
    c.netboot.server_address = detectAddress(c.netboot.interfaces[0]) ?? "";
  }
  c.iscsi.portal_address ||= c.netboot.server_address;
  return c;
}

function checkKnownKeys(values: Plain, defaults: Plain, file: string, prefix: string[] = []) {
  for (const [k, v] of Object.entries(values)) {
    const path = [...prefix, k];
    if (!(k in defaults)) {
      throw new ConfigError(`configuration file ${file}: unknown key ${formatKey(path)}`);
    }
    const d = defaults[k];
    if (isPlainObject(d)) {
      if (!isPlainObject(v)) {
        throw new ConfigError(
          `invalid configuration: ${formatKey(path)} (in ${file}): expected a [${path.join(".")}] table`,
        );
      }
      checkKnownKeys(v, d, file, path);
    }
  }
}

function mergeInto(
  target: Plain,
  source: Plain,
  prefix: string,
  origin: ConfigSource,
  sources: Map<string, ConfigSource>,
) {
  for (const [k, v] of Object.entries(source)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isPlainObject(v) && isPlainObject(target[k])) {
      mergeInto(target[k] as Plain, v, key, origin, sources);
    } else {
      target[k] = v;
      sources.set(key, origin);
    }
  }
}

/**
 * BOOTFLEET_<SECTION>_<KEY> (or BOOTFLEET_<KEY> for top-level keys) overrides a value.
 * Names are matched against the known keys rather than split on "_", since keys such
 * as data_dir contain underscores themselves. The string is converted to the type of
 * the key's default: numbers, booleans, and comma-separated lists.
 */
function applyEnvironment(
  target: Plain,
  env: Record<string, string | undefined>,
  sources: Map<string, ConfigSource>,
) {
  for (const path of leafPaths(target)) {
    const raw = env[envName(path)];
    if (raw === undefined) continue;
    const current = getPath(target, path);
    setPath(target, path, convertEnvValue(raw, current));
    sources.set(path.join("."), "environment");
  }
}

function convertEnvValue(raw: string, current: unknown): unknown {
  if (Array.isArray(current)) {
    return raw
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  }
  if (typeof current === "number") {
    // Left as a string when it is not a number, so validation names the key and value.
    return raw.trim() !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  }
  if (typeof current === "boolean") {
    const v = raw.trim().toLowerCase();
    if (["1", "true", "yes", "on"].includes(v)) return true;
    if (["0", "false", "no", "off"].includes(v)) return false;
    return raw;
  }
  return raw;
}

export function envName(path: string[]): string {
  return `BOOTFLEET_${path.join("_").toUpperCase()}`;
}

function leafPaths(obj: Plain, prefix: string[] = []): string[][] {
  const out: string[][] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (isPlainObject(v)) out.push(...leafPaths(v, [...prefix, k]));
    else out.push([...prefix, k]);
  }
  return out;
}

function getPath(obj: unknown, path: string[]): unknown {
  let cur: unknown = obj;
  for (const p of path) {
    if (!isPlainObject(cur) && !Array.isArray(cur)) return undefined;
    cur = (cur as Plain)[p];
  }
  return cur;
}

function setPath(obj: Plain, path: string[], value: unknown) {
  let cur = obj;
  for (const p of path.slice(0, -1)) cur = cur[p] as Plain;
  cur[path[path.length - 1]!] = value;
}

function isPlainObject(v: unknown): v is Plain {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** `[http] listen` for a key in a section, `data_dir` for a top-level key. */
export function formatKey(path: string[]): string {
  const keyPath = path.filter((p) => !/^\d+$/.test(p));
  if (keyPath.length <= 1) return keyPath[0] ?? "(root)";
  return `[${keyPath.slice(0, -1).join(".")}] ${keyPath[keyPath.length - 1]}`;
}

function describeExpected(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      return `a ${issue.expected}`;
    case "invalid_value":
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "too_small":
      return `at least ${String(issue.minimum)}`;
    case "too_big":
      return `at most ${String(issue.maximum)}`;
    case "unrecognized_keys":
      return `no unknown keys (${issue.keys.join(", ")})`;
    default:
      return issue.message.replace(/^Invalid input: expected /, "");
  }
}

function describeIoError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code === "ENOENT") return "no such file";
  if (e.code === "EACCES") return "permission denied";
  if (e.code === "EISDIR") return "it is a directory";
  return e.code ?? firstLine(err);
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split("\n")[0]!;
}

const SECRET_KEY = /(password|secret|token|private_key)$/i;

/** The effective configuration as TOML, with secrets masked, for --print-config. */
export function printableConfig(config: Config): string {
  return stringifyToml(maskedConfig(config));
}

/** The effective configuration with every secret-named key masked (--print-config, /api/config). */
export function maskedConfig(config: Config): Plain {
  const mask = (v: unknown, key: string): unknown => {
    if (isPlainObject(v)) {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, mask(x, k)]));
    }
    return SECRET_KEY.test(key) && v !== "" ? "********" : v;
  };
  return mask(config, "") as Plain;
}

/** Splits a listen string into a host (undefined: all addresses) and a port. */
export function parseListen(listen: string): { host: string | undefined; port: number } {
  const i = listen.lastIndexOf(":");
  const host = listen.slice(0, i).replace(/^\[|\]$/g, "");
  return { host: host === "" ? undefined : host, port: Number(listen.slice(i + 1)) };
}
