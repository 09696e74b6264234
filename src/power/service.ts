import type { Machine } from "../store/machines.js";
import { type IpmiPower, type PowerAction, PowerError, type PowerState } from "./ipmi.js";

export type PowerTarget = Pick<
  Machine,
  "mac_address" | "bmc_address" | "bmc_username" | "bmc_password"
>;

export interface PowerResult {
  method: "ipmi" | "wol";
  action: PowerAction;
  state: PowerState;
}

/**
 * A machine's power: through its BMC when it has one; otherwise Wake-on-LAN can switch it
 * on, and nothing can switch it off or tell its state (a diskless PC has no agent).
 */
export class PowerService {
  constructor(
    private readonly deps: {
      ipmi: IpmiPower;
      /** Sends the magic packet on the machine's LAN (the daemon knows the interface). */
      wake: (mac: string) => Promise<void>;
    },
  ) {}

  async act(m: PowerTarget, action: PowerAction): Promise<PowerResult> {
    if (m.bmc_address) {
      if (!m.bmc_username || m.bmc_password == null) {
        throw new PowerError("the machine's BMC has no user name or password set");
      }
      const r = await this.deps.ipmi.power(
        { address: m.bmc_address, username: m.bmc_username, password: m.bmc_password },
        action,
      );
      return { method: "ipmi", action, state: r.state };
    }
    if (action === "on") {
      await this.deps.wake(m.mac_address);
      return { method: "wol", action, state: "unknown" };
    }
    if (action === "query") return { method: "wol", action, state: "unknown" };
    throw new PowerError(`power ${action} needs a BMC: this machine has only Wake-on-LAN`);
  }
}
