import { join } from "node:path";
import { parseArgs } from "node:util";
import pino from "pino";
import { INITIAL_PASSWORD_FILE, retireInitialPassword } from "../api/auth/initial-admin.js";
import { hashPassword } from "../api/auth/password.js";
import { zEmail, zLabel, zPassword, zUsername } from "../api/validate.js";
import { ConfigError, loadConfig, parseListen } from "../config/config.js";
import { detectPrivileges } from "../host/privileges.js";
import { Store, StoreError } from "../store/index.js";
import { ROLES, type Role } from "../store/users.js";
import { VERSION } from "../version.js";
import { UnreachableError } from "./client.js";
import { type DoctorInputs, runDoctor } from "./doctor.js";
import {
  alerts,
  type BuildFlags,
  images,
  machines,
  type OpsContext,
  OpsUsageError,
  power,
  status,
  watchJob,
} from "./ops.js";
import { readPassword } from "./password-input.js";

const USAGE = `Usage: bootfleet <command> [options]

  version                               print the version
  user add NAME --role ROLE --password-stdin [--email E] [--full-name N]
                                        create a user (roles: ${ROLES.join(", ")}); the
                                        password is read from stdin (prompted, not echoed,
                                        on a terminal)
  user list                             list users

  status                                the daemon's health (exit 1 unless healthy)
  machines list | show ID               the machines, or one machine
  images list | versions ID             the image library, or one image's versions
  image recipes                         the image recipes the daemon can build
  image build RECIPE --name NAME [--description D]
                                        build an image from a recipe, following its job
                                        (exit 1 if a step failed)
  power on|off MACHINE                  power one machine on or off
  power on|off --location ROOM          every machine of a location (a bulk job)
  alerts                                open alerts
  jobs watch ID                         follow a job to its end (exit 1 if it failed)
  doctor                                check what breaks a deployment, with the fix for each
                                        (exit 1 when a check fails)

  --config PATH     the daemon's configuration file (default /etc/bootfleet/bootfleetd.toml)
  --socket PATH     the daemon's local API socket (default: [http] socket of the configuration)
  --json            JSON output, for scripts

"user" opens the daemon's database (data_dir of the configuration); the other commands
talk to the running daemon over its local socket, which only root or the bootfleet group
can open. Exit codes: 0 done, 1 refused or failed, 2 usage, 3 daemon not reachable.`;

export interface CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream;
}

const defaultIo = (): CliIo => ({
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
});

/** The `bootfleet` admin command. Returns the exit code. */
export async function main(
  argv: string[],
  env: NodeJS.ProcessEnv,
  io: CliIo = defaultIo(),
): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "version" || command === "--version") {
    io.stdout.write(`bootfleet ${VERSION}\n`);
    return 0;
  }
  if (command === undefined || command === "help" || command === "--help") {
    (command === undefined ? io.stderr : io.stdout).write(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  if (command === "user") {
    try {
      return await user(rest, env, io);
    } catch (err) {
      if (err instanceof UsageError || err instanceof ConfigError || err instanceof StoreError) {
        io.stderr.write(`bootfleet: ${err.message}\n`);
        return err instanceof UsageError ? 2 : 1;
      }
      throw err;
    }
  }
  if (command === "doctor") {
    try {
      return await doctor(rest, env, io);
    } catch (err) {
      if (err instanceof UsageError || err instanceof ConfigError) {
        io.stderr.write(`bootfleet: ${err.message}\n`);
        return err instanceof UsageError ? 2 : 1;
      }
      throw err;
    }
  }
  if (Object.hasOwn(OPS, command)) {
    try {
      return await ops(command, rest, env, io);
    } catch (err) {
      if (err instanceof UsageError || err instanceof OpsUsageError || err instanceof ConfigError) {
        io.stderr.write(`bootfleet: ${err.message}\n`);
        return err instanceof ConfigError ? 1 : 2;
      }
      if (err instanceof UnreachableError) {
        io.stderr.write(`bootfleet: ${err.message}\n`);
        return 3;
      }
      throw err;
    }
  }
  io.stderr.write(`bootfleet: unknown command "${command}"\n${USAGE}\n`);
  return 2;
}

type OpsFlags = { location?: string | undefined } & BuildFlags;

const OPS: Record<string, (ctx: OpsContext, args: string[], flags: OpsFlags) => Promise<number>> = {
  status: (ctx) => status(ctx),
  machines,
  images: (ctx, args, flags) => images(ctx, args, flags),
  image: (ctx, args, flags) => images(ctx, args, flags),
  power: (ctx, args, flags) => power(ctx, args, flags.location),
  alerts: (ctx) => alerts(ctx),
  jobs: watchJob,
};

async function ops(
  command: string,
  argv: string[],
  env: NodeJS.ProcessEnv,
  io: CliIo,
): Promise<number> {
  let parsed: ReturnType<typeof parseOps>;
  try {
    parsed = parseOps(argv);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.location !== undefined && command !== "power") {
    throw new UsageError("--location goes with power only");
  }
  const building = (command === "image" || command === "images") && positionals[0] === "build";
  if ((values.name !== undefined || values.description !== undefined) && !building) {
    throw new UsageError("--name and --description go with image build only");
  }
  let socket = values.socket;
  if (socket === undefined) {
    const { config } = loadConfig({ path: values.config, env, privileges: detectPrivileges() });
    socket = config.http.socket;
  }
  const ctx: OpsContext = { socket, json: values.json, io };
  return OPS[command]!(ctx, positionals, {
    location: values.location,
    name: values.name,
    description: values.description,
  });
}

async function doctor(argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  let parsed: ReturnType<typeof parseOps>;
  try {
    parsed = parseOps(argv);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { config: c } = loadConfig({
    path: parsed.values.config,
    env,
    privileges: detectPrivileges(),
  });
  const results = await runDoctor({
    ports: [
      { port: 67, proto: "udp", what: "DHCP" },
      { port: 4011, proto: "udp", what: "proxy-DHCP" },
      { port: c.tftp.port, proto: "udp", what: "TFTP" },
      { port: parseListen(c.http.listen).port, proto: "tcp", what: "HTTP" },
      { port: c.iscsi.portal_port, proto: "tcp", what: "iSCSI" },
    ].filter((p) => p.port > 0) as DoctorInputs["ports"],
    overlaysDir: c.iscsi.overlays_dir,
    reservePercent: c.storage.reserve_percent,
    ipxeFiles: [c.tftp.ipxe_bios, c.tftp.ipxe_efi_x64],
    interfaces: c.netboot.interfaces,
    // Another proxy-DHCP only competes with bootfleet's own.
    dhcpProbeMs: c.dhcp.enabled ? 1500 : 0,
    iscsiDriver: c.iscsi.target_driver,
    overlayDriver: c.iscsi.overlay_driver,
  });
  if (parsed.values.json) io.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else {
    for (const r of results) {
      io.stdout.write(`${r.status.toUpperCase().padEnd(4)}  ${r.name}: ${r.detail}\n`);
      if (r.fix && r.status !== "ok") io.stdout.write(`      fix: ${r.fix}\n`);
    }
  }
  return results.some((r) => r.status === "fail") ? 1 : 0;
}

function parseOps(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      config: { type: "string" },
      socket: { type: "string" },
      json: { type: "boolean", default: false },
      location: { type: "string" },
      name: { type: "string" },
      description: { type: "string" },
    },
  });
}

class UsageError extends Error {}

async function user(argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  let parsed: ReturnType<typeof parseUser>;
  try {
    parsed = parseUser(argv);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  const [sub, name, ...extra] = positionals;
  if (sub !== "add" && sub !== "list")
    throw new UsageError(`unknown user command "${sub ?? ""}"\n${USAGE}`);
  if (extra.length) throw new UsageError(`unexpected argument "${extra[0]}"`);

  const { config } = loadConfig({ path: values.config, env, privileges: detectPrivileges() });
  const store = Store.open({
    path: join(config.data_dir, "bootfleet.db"),
    busyTimeoutMs: config.store.busy_timeout_ms,
  });
  try {
    if (sub === "list") {
      for (const u of store.db
        .prepare("SELECT id, username, role, status, email FROM users ORDER BY id")
        .all() as {
        id: number;
        username: string;
        role: string;
        status: string;
        email: string | null;
      }[]) {
        io.stdout.write(`${u.id}\t${u.username}\t${u.role}\t${u.status}\t${u.email ?? ""}\n`);
      }
      return 0;
    }

    const username = zUsername.safeParse(name ?? "");
    if (!username.success) throw new UsageError(`user name: ${username.error.issues[0]?.message}`);
    const role = values.role as Role | undefined;
    if (!role || !ROLES.includes(role))
      throw new UsageError(`--role must be one of ${ROLES.join(", ")}`);
    if (!values["password-stdin"]) {
      throw new UsageError(
        "give --password-stdin (the password is never taken from the command line)",
      );
    }
    const email = values.email === undefined ? undefined : zEmail.safeParse(values.email);
    if (email && !email.success) throw new UsageError("--email: not a valid email address");
    const fullName = zLabel(128).safeParse(values["full-name"] ?? "");
    if (!fullName.success)
      throw new UsageError("--full-name: at most 128 characters, no control characters");
    if (store.users.findByLogin(username.data)) {
      io.stderr.write(`bootfleet: user ${username.data} already exists\n`);
      return 1;
    }

    const password = await readPassword(io.stdin as never, io.stderr as never);
    const ok = zPassword.safeParse(password);
    if (!ok.success) throw new UsageError(`password: ${ok.error.issues[0]?.message}`);
    const hash = await hashPassword(password);
    const created = store.users.create({
      username: username.data,
      role,
      password_hash: hash,
      email: email?.data ?? null,
      full_name: fullName.data,
    });
    await retireInitialPassword(
      store,
      join(config.data_dir, INITIAL_PASSWORD_FILE),
      pino({ level: "silent" }),
    );
    io.stdout.write(`created user ${created.username} (id ${created.id}, role ${created.role})\n`);
    return 0;
  } finally {
    store.close();
  }
}

function parseUser(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      role: { type: "string" },
      "password-stdin": { type: "boolean", default: false },
      email: { type: "string" },
      "full-name": { type: "string" },
      config: { type: "string" },
    },
  });
}
