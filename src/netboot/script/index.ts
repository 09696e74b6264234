export type {
  ChapCredentials,
  CustomData,
  DiscoveryData,
  IscsiDisk,
  KernelData,
  LocalData,
  MenuData,
  MenuItem,
  SanbootData,
  ScriptData,
  ScriptKind,
} from "./kinds.js";
export { SCRIPT_KINDS } from "./kinds.js";
export { loadTemplates, renderScript, type ScriptTemplates } from "./render.js";
export { TemplateError } from "./template.js";
export {
  type BootTokenClaims,
  type BootTokenFailure,
  type BootTokenRequest,
  type BootTokenResult,
  DEFAULT_BOOT_TOKEN_LIFETIME_MS,
  issueBootToken,
  verifyBootToken,
} from "./token.js";
export { ScriptValueError } from "./values.js";
