export {
  type BmcCredentials,
  type CommandResult,
  type CommandRunner,
  type IpmiOptions,
  IpmiPower,
  type PowerAction,
  PowerError,
  type PowerState,
  parseState,
} from "./ipmi.js";
export { type PowerResult, PowerService, type PowerTarget } from "./service.js";
export { magicPacket, parseMac, type WakeOptions, wakeOnLan } from "./wol.js";
