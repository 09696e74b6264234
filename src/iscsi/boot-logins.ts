import type { Store } from "../store/index.js";
import { type BootSession, endedByLogout } from "../store/sessions.js";

/**
 * How long after a boot's initiator logged out a login without a PXE phase before it is
 * still that boot. A new boot always starts with a DHCP offer, which opens a new session
 * (netboot/timeline.ts), so the only logins that reach this window are the booted OS taking
 * over its disk (iPXE's login drops when the kernel starts; the initramfs logs in, then
 * iscsid at start-up): seconds on a PC, minutes on a slow VM without KVM, and an OS that
 * lost its disk for a while (network, a restarted target) reconnecting. Beyond the window a
 * login is something bootfleet did not see boot (a NIC's own iSCSI boot, another PXE
 * server, an initiator started by hand): it gets a session of its own rather than being
 * added to a boot that ended long ago.
 */
export const RELOGIN_WINDOW_MS = 10 * 60_000;

/** What a poll of one target's logins did to its machine's boot sessions. */
export type LoginChange =
  /** The boot's first login (iPXE's sanboot, usually). */
  | { kind: "login"; session: BootSession }
  /** A later login of the same boot (the booted OS's own): it joined the boot's session. */
  | { kind: "relogin"; session: BootSession }
  /** A login no boot bootfleet saw led to: a session of its own. */
  | { kind: "unbooted_login"; session: BootSession }
  /** The initiator is gone: the session ended. */
  | { kind: "logout"; session: BootSession };

/**
 * Moves a machine's boot sessions along with what the target driver reports: whether the
 * target's initiator is logged in now. One boot is one session, whatever number of logins
 * it takes: only a new DHCP/PXE phase, or a login beyond RELOGIN_WINDOW_MS after the last
 * logout, starts a new one.
 */
export function followLogin(
  store: Store,
  target: { id: number; machine_id: number },
  loggedIn: boolean,
  nowMs: number,
): LoginChange | undefined {
  return store.transaction(() => {
    const s = store.sessions;
    const now = new Date(nowMs).toISOString();
    const current = s.current(target.machine_id);
    if (current) {
      if (loggedIn && current.status === "starting") {
        return { kind: "login", session: s.firstLogin(current.id, target.id, now)! };
      }
      if (!loggedIn && current.status === "active" && current.target_id === target.id) {
        return { kind: "logout", session: s.endAtLogout(current.id, now)! };
      }
      return undefined;
    }
    // The machine's latest session: no PXE phase came after it (one would have opened a
    // newer session).
    const last = s.latest(target.machine_id);
    // An operator ended this login's session (POST /sessions/{id}/stop): the same login
    // is not a new boot. Its logout is still stamped, so the next login is one.
    if (
      last?.status === "stopped" &&
      last.target_id === target.id &&
      last.iscsi_login_at !== null &&
      !last.iscsi_logout_at
    ) {
      if (!loggedIn) s.update(last.id, { iscsi_logout_at: now });
      return undefined;
    }
    if (!loggedIn) return undefined;
    if (last && sameBoot(last, target.id, nowMs)) {
      return { kind: "relogin", session: s.relogin(last.id, now)! };
    }
    const row = s.start({ machine_id: target.machine_id, boot_method: "iscsi" });
    return { kind: "unbooted_login", session: s.firstLogin(row.id, target.id, now)! };
  });
}

/** Whether a login to this target now belongs to the boot of the ended session `last`. */
function sameBoot(last: BootSession, targetId: number, nowMs: number): boolean {
  return (
    endedByLogout(last) &&
    last.target_id === targetId &&
    nowMs - Date.parse(last.iscsi_logout_at!) <= RELOGIN_WINDOW_MS
  );
}
