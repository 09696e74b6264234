/**
 * Power control through a BMC with ipmitool over IPMI v2.0 (lanplus). The password goes to
 * ipmitool in the environment variable IPMI_PASSWORD (`-E`): never on the command line
 * (where any local user can read it in /proc) and never in a log or an error message.
 */

export type PowerAction = "on" | "off" | "cycle" | "query";
export type PowerState = "on" | "off" | "unknown";

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell; the production one wraps runProcess, tests record calls. */
export type CommandRunner = (
  command: string,
  args: readonly string[],
  opts: { env: NodeJS.ProcessEnv; timeoutMs: number },
) => Promise<CommandResult>;

export interface BmcCredentials {
  address: string;
  username: string;
  password: string;
}

export class PowerError extends Error {
  override name = "PowerError";
}

// A BMC address is an IPv4/IPv6 literal or a host name, and no argument may look like an
// option to ipmitool.
const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*|\[?[0-9A-Fa-f:.]+\]?)$/;
const USER = /^[^\s\0-][^\s\0]{0,31}$/;

const CHASSIS: Record<PowerAction, string> = {
  on: "on",
  off: "off",
  cycle: "cycle",
  query: "status",
};

export interface IpmiOptions {
  run: CommandRunner;
  /** The environment ipmitool runs with (PATH); the password is added to a copy. */
  baseEnv?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  binary?: string;
}

export class IpmiPower {
  constructor(private readonly opts: IpmiOptions) {}

  async power(bmc: BmcCredentials, action: PowerAction): Promise<{ state: PowerState }> {
    if (!HOST.test(bmc.address)) throw new PowerError("invalid BMC address");
    if (!USER.test(bmc.username)) throw new PowerError("invalid BMC user name");
    const args = [
      "-I",
      "lanplus",
      "-H",
      bmc.address,
      "-U",
      bmc.username,
      "-E",
      "chassis",
      "power",
      CHASSIS[action],
    ];
    const env = { ...(this.opts.baseEnv ?? {}), IPMI_PASSWORD: bmc.password };
    let r: CommandResult;
    try {
      r = await this.opts.run(this.opts.binary ?? "ipmitool", args, {
        env,
        timeoutMs: this.opts.timeoutMs ?? 20_000,
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new PowerError(
        e.code === "ENOENT"
          ? "ipmitool is not installed"
          : `ipmitool failed: ${scrub(e.message, bmc.password)}`,
      );
    }
    if (r.code !== 0) {
      const why = scrub(r.stderr.trim().split("\n").pop() ?? "", bmc.password);
      throw new PowerError(
        `BMC ${bmc.address} refused chassis power ${CHASSIS[action]}: ${why || `exit ${r.code}`}`,
      );
    }
    if (action === "query") return { state: parseState(r.stdout) };
    // "Chassis Power Control: Up/On" etc.: the request was accepted; the state follows.
    return { state: action === "off" ? "off" : action === "on" ? "on" : "unknown" };
  }
}

/** "Chassis Power is on" / "Chassis Power is off" (ipmitool's chassis power status). */
export function parseState(stdout: string): PowerState {
  const m = /Chassis Power is (on|off)/i.exec(stdout);
  return m ? (m[1]!.toLowerCase() as PowerState) : "unknown";
}

/** A BMC may echo what it was sent: the password never leaves in a message. */
function scrub(text: string, secret: string): string {
  return secret ? text.split(secret).join("***") : text;
}
