import type { Machine } from "./types.ts";

/**
 * The live boot states the issue asks the API to derive (machine.state), in boot order,
 * with the words the grid shows. Until the API sends `state`, it is inferred from what the
 * API has today: an active boot session means booted, else the machine's status.
 */
export const MACHINE_STATES: Record<string, string> = {
  off: "Off",
  unknown: "Unknown",
  discovered: "Discovered",
  pxe: "PXE",
  ipxe: "iPXE",
  script_served: "Script served",
  iscsi_login: "iSCSI logged in",
  booted: "Booted",
  stalled: "Stalled",
  error: "Error",
  maintenance: "Maintenance",
  retired: "Retired",
  inactive: "Inactive",
};

export function machineState(m: Machine): string {
  if (m.state) return m.state;
  if (m.is_online) return "booted";
  if (["discovered", "error", "maintenance", "retired", "inactive"].includes(m.status)) {
    return m.status;
  }
  return "unknown";
}

export function stateLabel(state: string): string {
  return MACHINE_STATES[state] ?? state.replace(/_/g, " ");
}

/** Words for an event type on a tile ("session started"). */
export function eventLabel(type: string): string {
  return type.replace(/_/g, " ");
}
