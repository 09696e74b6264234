/**
 * Power control through a BMC with ipmitool over IPMI v2.0 (lanplus). The password goes to
 * ipmitool in the environment variable IPMI_PASSWORD (`-E`): never on the command line
 * (where any local user can read it in /proc) and never in a log or an error message.
 */

import { CommandError, type CommandRunner, commandRunner, redact } from "../host/exec.js";
import { errorText } from "../lib/error-text.js";

export type PowerAction = "on" | "off" | "cycle" | "query";
export type PowerState = "on" | "off" | "unknown";

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
  /** Runs ipmitool; tests hand in a recording fake. */
  run?: CommandRunner;
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
    const secrets = [bmc.password];
    const run = this.opts.run ?? commandRunner();
    let stdout: string;
    try {
      ({ stdout } = await run(this.opts.binary ?? "ipmitool", args, {
        env,
        timeoutMs: this.opts.timeoutMs ?? 20_000,
        secrets,
      }));
    } catch (err) {
      if (err instanceof CommandError && err.exitCode === "ENOENT") {
        throw new PowerError("ipmitool is not installed");
      }
      if (err instanceof CommandError && typeof err.exitCode === "number") {
        // Redacted again: a BMC may echo what it was sent, and a fake runner may not scrub.
        const why = redact(err.stderr.trim().split("\n").pop() ?? "", secrets);
        throw new PowerError(
          `BMC ${bmc.address} refused chassis power ${CHASSIS[action]}: ${why || `exit ${err.exitCode}`}`,
        );
      }
      throw new PowerError(`ipmitool failed: ${redact(errorText(err), secrets)}`);
    }
    if (action === "query") return { state: parseState(stdout) };
    // "Chassis Power Control: Up/On" etc.: the request was accepted; the state follows.
    return { state: action === "off" ? "off" : action === "on" ? "on" : "unknown" };
  }
}

/** "Chassis Power is on" / "Chassis Power is off" (ipmitool's chassis power status). */
export function parseState(stdout: string): PowerState {
  const m = /Chassis Power is (on|off)/i.exec(stdout);
  return m ? (m[1]!.toLowerCase() as PowerState) : "unknown";
}
