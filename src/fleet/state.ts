import type { BootSession } from "../store/sessions.js";

/**
 * Where a machine stands, from what the server saw of its last boot:
 * - unknown: never seen booting; off: its last boot ended (logged out, stopped);
 * - waking: a session was asked for (power on) and nothing of the boot seen yet;
 * - pxe: the proxy-DHCP offered it a boot; ipxe: bootfleet's iPXE went over TFTP;
 * - script_served: iPXE fetched its boot script; iscsi_logged_in: its initiator is logged
 *   in to its target; booted: the target served it I/O;
 * - stalled: stuck in one of those phases beyond the bound; error: its session or target
 *   failed.
 */
export const MACHINE_STATES = [
  "unknown",
  "off",
  "waking",
  "pxe",
  "ipxe",
  "script_served",
  "iscsi_logged_in",
  "booted",
  "stalled",
  "error",
] as const;
export type MachineState = (typeof MACHINE_STATES)[number];

/** The phases a boot goes through, in order; a stall names the one it stopped in. */
export type BootStage = "waking" | "pxe" | "ipxe" | "script_served" | "iscsi_logged_in";

export type SessionStamps = Pick<
  BootSession,
  | "status"
  | "started_at"
  | "ended_at"
  | "dhcp_offer_at"
  | "tftp_done_at"
  | "script_served_at"
  | "iscsi_login_at"
  | "iscsi_logout_at"
  | "io_seen_at"
  | "error"
>;

export interface StateInput {
  /** The machine's most recent boot session, ended or not. */
  session: SessionStamps | undefined;
  /** Why the machine's target failed, when it did (status error). */
  targetError?: string | null | undefined;
  /** Whether the target driver counts I/O: without it "booted" cannot be told apart. */
  ioObservable: boolean;
  /** Milliseconds since the epoch. */
  now: number;
  /** How long a boot may sit in one phase before it is stalled, in ms. */
  stallAfterMs: number;
}

export interface DerivedState {
  state: MachineState;
  /** The last phase reached (a stall's phase; the phase before booted, error or off). */
  phase: BootStage | "booted" | null;
  /** When the current state was entered (ISO); null when never seen. */
  since: string | null;
  /** For stalled and error: one sentence. */
  reason: string | null;
  /** For stalled: what usually causes a boot to stop there, most likely first. */
  likely_causes: string[];
}

/**
 * What typically stops a boot in each phase, for the stall alert: the admin gets a
 * checklist rather than "stuck".
 */
export const STALL_CAUSES: Record<BootStage, string[]> = {
  waking: [
    "Wake-on-LAN disabled in the firmware, or the magic packet does not reach the PC's segment",
    "network boot is not in the firmware's boot order",
    "NIC link down (cable, switch port)",
  ],
  pxe: [
    "TFTP blocked between the PC and the server (firewall, UDP port 69)",
    "the firmware refused the iPXE binary (Secure Boot, wrong architecture)",
    "spanning-tree port delay on the switch port (enable portfast / edge port)",
  ],
  ipxe: [
    "spanning-tree port delay: iPXE's own DHCP timed out while the switch port was still learning (enable portfast / edge port)",
    "the boot script URL is not reachable from the PC (firewall on the HTTP port)",
    "wrong NIC driver in iPXE for this NIC (try snponly/undionly)",
  ],
  script_served: [
    "CHAP mismatch: the initiator's credentials do not match the target's",
    "spanning-tree port delay or no route to the iSCSI portal (TCP port 3260)",
    "the iSCSI target is not running (see target errors)",
  ],
  iscsi_logged_in: [
    "the image is not bootable (no boot sector, or the wrong disk as LUN)",
    "wrong NIC driver in the image: the OS cannot take over the iSCSI disk from the firmware",
    "CHAP mismatch on the OS's own iSCSI login",
  ],
};

const latest = (...isos: (string | null)[]): string | null =>
  isos.reduce<string | null>((a, b) => (b !== null && (a === null || b > a) ? b : a), null);

/**
 * The one decision of a machine's live state: pure, from the session's phase stamps,
 * the target's health, and the time. The same inputs always give the same answer, so the
 * state a table test checks is the state the dashboard shows.
 */
export function deriveMachineState(i: StateInput): DerivedState {
  const s = i.session;
  const none = { reason: null, likely_causes: [] };
  if (!s) return { state: "unknown", phase: null, since: null, ...none };
  const reached = reachedStage(s);
  if (s.status === "error") {
    return {
      state: "error",
      phase: reached.phase,
      since: s.ended_at ?? reached.at,
      reason: s.error ?? "the boot session failed",
      likely_causes: [],
    };
  }
  if (s.status === "stopped") {
    return {
      state: "off",
      phase: reached.phase,
      since: latest(s.ended_at, s.iscsi_logout_at),
      ...none,
    };
  }
  if (i.targetError) {
    return {
      state: "error",
      phase: reached.phase,
      since: reached.at,
      reason: `target: ${i.targetError}`,
      likely_causes: [],
    };
  }
  if (reached.phase === "booted")
    return { state: "booted", phase: "booted", since: reached.at, ...none };
  // Without an I/O counter a logged-in machine cannot be told to be stuck: never guessed.
  const canStall = reached.phase !== "iscsi_logged_in" || i.ioObservable;
  const waited = i.now - Date.parse(reached.at);
  if (canStall && waited > i.stallAfterMs) {
    return {
      state: "stalled",
      phase: reached.phase,
      since: new Date(Date.parse(reached.at) + i.stallAfterMs).toISOString(),
      reason: stallReason(reached.phase, Math.round(waited / 1000)),
      likely_causes: STALL_CAUSES[reached.phase],
    };
  }
  return { state: reached.phase, phase: reached.phase, since: reached.at, ...none };
}

/**
 * Until when time alone leaves deriveMachineState's answer as it is (milliseconds since
 * the epoch, exclusive; `now` in whole milliseconds): a boot that sits in a phase stalls
 * once it waited longer than the bound, and a stall's reason counts the seconds (rounded,
 * so it changes at every half second). Infinity when only a new stamp, a new session or
 * a target's error can change the state. Whoever keeps derived states (the API's list
 * cache) keeps them until then, or until the store changes.
 */
export function stateHoldsUntil(i: StateInput): number {
  const s = i.session;
  if (!s || s.status === "error" || s.status === "stopped" || i.targetError) return Infinity;
  const reached = reachedStage(s);
  if (reached.phase === "booted") return Infinity;
  if (reached.phase === "iscsi_logged_in" && !i.ioObservable) return Infinity;
  const at = Date.parse(reached.at);
  // A stamp that does not parse never stalls, but is not worth keeping either.
  if (Number.isNaN(at)) return i.now;
  const waited = i.now - at;
  if (waited <= i.stallAfterMs) return at + i.stallAfterMs + 1;
  return at + (Math.round(waited / 1000) + 0.5) * 1000;
}

/** The live states of some machines, derived at one moment. */
export interface StatesNow {
  states: Map<number, DerivedState>;
  /**
   * Whether deriving them again now would give the same states from the same store rows
   * (false once time alone changed one: see stateHoldsUntil). A change in the store is the
   * caller's to notice.
   */
  stillHold(): boolean;
}

function reachedStage(s: SessionStamps): {
  phase: BootStage | "booted";
  at: string;
} {
  if (s.io_seen_at) return { phase: "booted", at: s.io_seen_at };
  if (s.iscsi_login_at) return { phase: "iscsi_logged_in", at: s.iscsi_login_at };
  if (s.script_served_at) return { phase: "script_served", at: s.script_served_at };
  // iPXE's own DHCP stamps the offer again: the phase is still ipxe, timed from the later.
  if (s.tftp_done_at) return { phase: "ipxe", at: latest(s.tftp_done_at, s.dhcp_offer_at)! };
  if (s.dhcp_offer_at) return { phase: "pxe", at: s.dhcp_offer_at };
  return { phase: "waking", at: s.started_at };
}

function stallReason(phase: BootStage, seconds: number): string {
  switch (phase) {
    case "waking":
      return `asked to boot ${seconds} s ago and no PXE request seen`;
    case "pxe":
      return `offered a PXE boot ${seconds} s ago and did not load iPXE`;
    case "ipxe":
      return `loaded iPXE ${seconds} s ago and did not fetch its boot script`;
    case "script_served":
      return `got its boot script ${seconds} s ago and did not log in to its iSCSI target`;
    case "iscsi_logged_in":
      return `logged in to its iSCSI target ${seconds} s ago and read nothing`;
  }
}
