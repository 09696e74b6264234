import { parseArgs } from "node:util";
import type { Logger } from "pino";
import {
  ConfigError,
  type LoadConfigOptions,
  loadConfig,
  printableConfig,
} from "../config/config.js";
import { detectPrivileges } from "../host/privileges.js";
import { StoreError } from "../store/index.js";
import { VERSION } from "../version.js";
import { Daemon } from "./daemon.js";
import { createLogger } from "./logger.js";
import { createNotifier } from "./sdnotify.js";
import { adjustForPrivileges } from "./unprivileged.js";

const USAGE = `Usage: bootfleetd [options]

  --config PATH     configuration file (default /etc/bootfleet/bootfleetd.toml; optional)
  --print-config    print the effective configuration (secrets masked) and exit
  --pretty          human-readable logs (the default on a terminal)
  --version         print the version and exit
  --help            this text

Every key can be set from the environment as BOOTFLEET_<SECTION>_<KEY>.`;

/** Exit codes: 2 for a configuration or usage error (systemd must not restart-loop on it). */
const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  let args: ReturnType<typeof parse>;
  try {
    args = parse(argv);
  } catch (err) {
    process.stderr.write(`bootfleetd: ${(err as Error).message}\n${USAGE}\n`);
    process.exit(EXIT_USAGE);
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (args.version) {
    process.stdout.write(`bootfleetd ${VERSION}\n`);
    return;
  }

  const privileges = detectPrivileges();
  const loadOptions: LoadConfigOptions = { path: args.config, env, privileges };
  let loaded: ReturnType<typeof loadConfig>;
  let adjusted: ReturnType<typeof adjustForPrivileges>;
  try {
    loaded = loadConfig(loadOptions);
    adjusted = adjustForPrivileges(loaded, privileges);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`bootfleetd: ${err.message}\n`);
    process.exit(EXIT_USAGE);
  }
  const { config, changes } = adjusted;
  if (args["print-config"]) {
    process.stdout.write(printableConfig(config));
    return;
  }

  const log = createLogger({
    level: config.log.level,
    pretty: args.pretty || process.stdout.isTTY === true,
  });
  log.info(
    { config_file: loaded.file ?? "(none: embedded defaults)", version: VERSION },
    "bootfleetd starting",
  );
  if (changes.length) log.warn(`running unprivileged: ${changes.join("; ")}`);
  if (config.dhcp.enabled && config.netboot.interfaces.length === 0) {
    log.warn("no netboot interface: set [netboot] interfaces (no default route to guess from)");
  }

  const notifier = createNotifier(env, log);
  const daemon = new Daemon(config, log, notifier);
  installSignals(daemon, log, loadOptions, privileges);
  try {
    await daemon.start();
  } catch (err) {
    fatal(log, err);
    await daemon.stop().catch(() => {});
    process.exit(EXIT_FAILURE);
  }
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      config: { type: "string" },
      "print-config": { type: "boolean", default: false },
      pretty: { type: "boolean", default: false },
      version: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  }).values;
}

function installSignals(
  daemon: Daemon,
  log: Logger,
  loadOptions: LoadConfigOptions,
  privileges: ReturnType<typeof detectPrivileges>,
) {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stop requested");
    daemon.stop().then(
      () => process.exit(0),
      (err) => {
        fatal(log, err);
        process.exit(EXIT_FAILURE);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => {
    try {
      const next = adjustForPrivileges(loadConfig(loadOptions), privileges).config;
      daemon.reload(next);
    } catch (err) {
      log.error(
        { reason: (err as Error).message },
        "configuration reload refused; the running configuration stays",
      );
    }
  });
}

/** Known failures become one readable line; only a bug logs a stack. */
function fatal(log: Logger, err: unknown) {
  if (err instanceof StoreError || err instanceof ConfigError) {
    log.fatal(err.message);
  } else if (err instanceof Error && /^(HTTP|TFTP|DHCP|iSCSI) /.test(err.message)) {
    log.fatal(err.message);
  } else {
    log.fatal({ err }, "bootfleetd failed to start");
  }
}
