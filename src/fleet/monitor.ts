import type { Logger } from "pino";
import { checkReserve } from "../diskspace/reserve.js";
import type { EventBus } from "../events/bus.js";
import type { TargetIo } from "../iscsi/target/types.js";
import { errorText } from "../lib/error-text.js";
import type { Store } from "../store/index.js";
import type { BootSession } from "../store/sessions.js";
import type { Target } from "../store/targets.js";
import { Alerts } from "./alerts.js";
import {
  type DerivedState,
  deriveMachineState,
  type MachineState,
  type StateInput,
  type StatesNow,
  stateHoldsUntil,
} from "./state.js";

export interface FleetMonitorDeps {
  store: Store;
  log: Logger;
  bus?: EventBus | undefined;
  clock?: () => number;
  /** `[fleet] stall_timeout_seconds`, in ms. */
  stallAfterMs: number;
  /** How often states are re-derived and the targets' I/O read, in ms. */
  tickMs?: number;
  /**
   * I/O each of these targets served its sessions logged in now, read at once (absent: the
   * driver cannot tell). A target missing from the answer could not be read.
   */
  io?: ((iqns: readonly string[]) => Promise<ReadonlyMap<string, TargetIo>>) | undefined;
  /** The free-space reserve to watch: alerts while a folder is below it. */
  reserve?: { dirs: string[]; percent: number } | undefined;
}

/** Online, in the GGnet sense: the machine runs from its iSCSI disk. */
const ONLINE: ReadonlySet<MachineState> = new Set(["iscsi_logged_in", "booted"]);
const LIVE = new Set(["starting", "active", "stopping"]);
/** Overlay usage against the image size: warning, then critical. */
const OVERLAY_LEVELS = [
  { percent: 95, cause: "overlay_usage_95", severity: "critical" as const },
  { percent: 80, cause: "overlay_usage_80", severity: "warning" as const },
];
/** Disk and overlay checks walk file systems: every this many ticks. */
const RESOURCE_EVERY = 30;

interface Seen {
  state: MachineState;
  sessionId: string | null;
  live: boolean;
}

/**
 * The fleet's live view: derives every machine's state (src/fleet/state.ts) from its
 * boot session and the time, and turns changes into events (session_started,
 * machine_state, machine_online, machine_offline, session_stopped) and alerts (stalls,
 * target errors, overlay usage, disk reserve, failed jobs). It only reads the store and
 * stamps `io_seen_at`; the boot itself is driven by netboot and iscsi.
 */
export class FleetMonitor {
  readonly alerts: Alerts;
  readonly #clock: () => number;
  readonly #seen = new Map<number, Seen>();
  /** Session ids whose session_stopped went out already (the reconciler sends some). */
  readonly #stopped = new Set<string>();
  /** Per session: the I/O counters' reading before its login (cumulative counters). */
  readonly #ioBase = new Map<string, number>();
  #primed = false;
  #timer: NodeJS.Timeout | undefined;
  /**
   * Machines with an active stall alert: read from the store once, then kept here (only
   * this monitor raises them), so that re-deriving a machine costs no alert query. Known
   * absent rather than present, it cost one query per machine on its first sight, which is
   * every machine of a boot storm after a restart (bench/dhcp, the known pass).
   */
  #stallAlerted: Set<number> | undefined;
  #ticking = false;
  #ticks = 0;
  #off: (() => void) | undefined;

  constructor(private readonly d: FleetMonitorDeps) {
    this.#clock = d.clock ?? Date.now;
    this.alerts = new Alerts({ store: d.store, bus: d.bus });
    this.#off = d.bus?.on((e) => {
      if (e.type === "session_stopped") {
        // Bounded: ids the monitor never sees end (a restart in between) must not pile up.
        if (this.#stopped.size >= 1000) this.#stopped.clear();
        this.#stopped.add(e.payload.session_id);
      }
      if (e.type === "job_progress" && e.payload.status === "failed") {
        this.alerts.raise({
          cause: `job_failed:${e.payload.type}`,
          severity: "warning",
          machine_id: null,
          message: `job ${e.payload.job_id} (${e.payload.type}) failed: ${d.store.jobs.get(e.payload.job_id)?.error ?? e.payload.message ?? "no reason recorded"}`,
          detail: { job_id: e.payload.job_id, type: e.payload.type },
        });
      }
    });
  }

  /** Whether "booted" (I/O flowing) can be seen: the target driver counts I/O. */
  get ioObservable(): boolean {
    return this.d.io !== undefined;
  }

  get stallAfterMs(): number {
    return this.d.stallAfterMs;
  }

  start(): void {
    this.evaluate();
    this.#timer = setInterval(() => void this.tick(), this.d.tickMs ?? 1000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#off?.();
  }

  /** One machine's state now. */
  stateOf(machineId: number): DerivedState {
    return this.statesOf([machineId]).get(machineId)!;
  }

  /** Several machines' states now, read with one query per table (a list page). */
  statesOf(machineIds: readonly number[]): Map<number, DerivedState> {
    return this.statesNow(machineIds).states;
  }

  /** Several machines' states now, and whether they still hold later (the API's list cache). */
  statesNow(machineIds: readonly number[]): StatesNow {
    const sessions = this.d.store.sessions.latestFor(machineIds);
    const errors = this.d.store.targets.errorsFor(machineIds);
    const now = this.#clock();
    let until = Infinity;
    const states = new Map<number, DerivedState>();
    for (const id of machineIds) {
      const input = this.#input(sessions.get(id), errors.get(id), now);
      states.set(id, deriveMachineState(input));
      until = Math.min(until, stateHoldsUntil(input));
    }
    return { states, stillHold: () => this.#clock() < until };
  }

  /** Reads I/O of logged-in machines, re-derives states, now and then checks resources. */
  async tick(): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      this.evaluate();
      if (await this.#readIo()) this.evaluate();
      if (this.#ticks++ % RESOURCE_EVERY === 0) await this.#checkResources();
    } catch (err) {
      this.d.log.warn({ err: errorText(err) }, "fleet state check failed");
    } finally {
      this.#ticking = false;
    }
  }

  /**
   * Re-derives every machine's state and announces what changed. The first run only
   * learns where things stand (a restart does not announce the whole fleet again).
   */
  evaluate(): void {
    const { store } = this.d;
    const latest = new Map(store.sessions.latestPerMachine().map((s) => [s.machine_id, s]));
    const targetErrors = new Map<number, string>();
    // Resolved only where one is open: one read for the fleet, not one per target a tick.
    const alerted = store.alerts.machinesWithActive("target_error");
    for (const t of store.targets.allActive()) {
      const failed = t.status === "error";
      if (failed) targetErrors.set(t.machine_id, t.status_reason ?? "failed");
      if (!failed && !alerted.has(t.machine_id)) continue;
      this.alerts.set(failed, {
        cause: "target_error",
        severity: "critical",
        machine_id: t.machine_id,
        message: `iSCSI target ${t.iqn} failed: ${t.status_reason ?? "unknown reason"}`,
        detail: { target_id: t.id, iqn: t.iqn },
      });
    }
    for (const [machineId, session] of latest) {
      const derived = this.#derive(session, targetErrors.get(machineId));
      this.#announce(machineId, session, derived);
    }
    // Deleted machines (their sessions went with them) are forgotten.
    for (const id of this.#seen.keys()) {
      if (!latest.has(id)) {
        this.#seen.delete(id);
        this.#stallAlerted?.delete(id);
      }
    }
    this.#primed = true;
  }

  /**
   * One machine, right after a phase of its boot was stamped: the boot path (DHCP, TFTP,
   * script) pays for this machine only, not for the whole fleet.
   */
  evaluateMachine(machineId: number): void {
    this.evaluateMachines([machineId]);
  }

  /**
   * Several machines whose boots were stamped together (the proxy-DHCP's offers of one
   * event-loop turn): one read per table for all of them, not a few per machine.
   */
  evaluateMachines(machineIds: readonly number[]): void {
    if (!this.#primed || machineIds.length === 0) return;
    // As written: it is told after each write of the proxy-DHCP's offers, and told again
    // after the next (store/pending-offers.ts); a read that wrote the queue first wrote it
    // a turn at a time.
    const sessions = this.d.store.sessions.latestWrittenFor(machineIds);
    const errors = this.d.store.targets.errorsFor(machineIds);
    for (const id of machineIds) {
      const session = sessions.get(id);
      if (session) this.#announce(id, session, this.#derive(session, errors.get(id)));
    }
  }

  #derive(session: BootSession | undefined, targetError: string | undefined): DerivedState {
    return deriveMachineState(this.#input(session, targetError, this.#clock()));
  }

  #input(
    session: BootSession | undefined,
    targetError: string | undefined,
    now: number,
  ): StateInput {
    return {
      session,
      targetError,
      ioObservable: this.ioObservable,
      now,
      stallAfterMs: this.d.stallAfterMs,
    };
  }

  #announce(machineId: number, s: BootSession, now: DerivedState): void {
    const bus = this.d.bus;
    const before = this.#seen.get(machineId);
    const live = LIVE.has(s.status);
    this.#seen.set(machineId, { state: now.state, sessionId: s.session_id, live });
    if (!this.#primed) return;
    // The session it was in ended, or a new boot replaced it.
    if (before?.live && before.sessionId && (before.sessionId !== s.session_id || !live)) {
      // Announced already when the reconciler saw the logout: once is enough.
      const announced = this.#stopped.has(before.sessionId);
      if (!announced) {
        const ended =
          before.sessionId === s.session_id
            ? s
            : this.d.store.sessions.getBySessionId(before.sessionId);
        bus?.publish("session_stopped", {
          session_id: before.sessionId,
          machine_id: machineId,
          status: ended?.status ?? "stopped",
          ...(ended?.error ? { reason: ended.error } : {}),
        });
      }
      this.#stopped.delete(before.sessionId);
    }
    // A new boot, or a boot's session live again: its OS logged in after iPXE's login ended
    // (iscsi/boot-logins.ts), and the session_stopped that went out is taken back.
    if (live && (before?.sessionId !== s.session_id || !before.live)) {
      bus?.publish("session_started", {
        session_id: s.session_id,
        machine_id: machineId,
        target_id: s.target_id,
        client_ip: s.client_ip,
      });
    }
    const previous = before?.state ?? "unknown";
    if (previous !== now.state) {
      bus?.publish("machine_state", {
        machine_id: machineId,
        state: now.state,
        previous,
        phase: now.phase,
        session_id: s.session_id,
        reason: now.reason,
      });
      if (ONLINE.has(now.state) && !ONLINE.has(previous)) {
        bus?.publish("machine_online", {
          machine_id: machineId,
          ip_address: s.client_ip ?? this.d.store.machines.get(machineId)?.ip_address ?? null,
        });
      } else if (!ONLINE.has(now.state) && ONLINE.has(previous)) {
        bus?.publish("machine_offline", { machine_id: machineId });
      }
    }
    this.#stallAlert(machineId, s, now);
  }

  #stallAlert(machineId: number, s: BootSession, now: DerivedState): void {
    this.#stallAlerted ??= this.d.store.alerts.machinesWithActive("stall");
    if (now.state === "stalled") {
      const name = this.d.store.machines.get(machineId)?.name ?? `machine ${machineId}`;
      this.alerts.raise({
        cause: "stall",
        severity: "warning",
        machine_id: machineId,
        message: `${name} stalled in phase ${now.phase}: ${now.reason}. Likely causes: ${now.likely_causes.join("; ")}`,
        detail: {
          phase: now.phase,
          session_id: s.session_id,
          reason: now.reason,
          likely_causes: now.likely_causes,
        },
      });
      this.#stallAlerted.add(machineId);
    } else if (now.state !== "error" && this.#stallAlerted.has(machineId)) {
      // Booted, moving again, or off: the stall is over. (An error keeps it for context.)
      this.alerts.resolve("stall", machineId);
      this.#stallAlerted.delete(machineId);
    }
  }

  /**
   * Stamps io_seen_at on logged-in sessions whose target served I/O. True if any did.
   * Counters that run across sessions (LIO) are compared with their reading from before
   * the login (taken from the moment the script was served), so an earlier boot's I/O
   * never counts for this one.
   */
  async #readIo(): Promise<boolean> {
    const io = this.d.io;
    if (!io) return false;
    const { store } = this.d;
    const watched: { session: BootSession; iqn: string }[] = [];
    for (const s of store.sessions.latestPerMachine()) {
      if (!LIVE.has(s.status) || s.io_seen_at) continue;
      if (!s.iscsi_login_at && !s.script_served_at) continue;
      const target =
        s.target_id !== null
          ? store.targets.get(s.target_id)
          : store.targets.forMachine(s.machine_id).find((t) => t.is_active === 1);
      if (target) watched.push({ session: s, iqn: target.iqn });
    }
    const ids = new Set(watched.map((w) => w.session.session_id));
    for (const id of this.#ioBase.keys()) if (!ids.has(id)) this.#ioBase.delete(id);
    if (watched.length === 0) return false;
    let counters: ReadonlyMap<string, TargetIo>;
    try {
      // One read for all: a storm's hundred booting machines are one request, not a hundred.
      counters = await io(watched.map((w) => w.iqn));
    } catch (err) {
      this.d.log.debug({ err: errorText(err) }, "target I/O not read");
      return false;
    }
    let changed = false;
    for (const { session: s, iqn } of watched) {
      const c = counters.get(iqn);
      if (!c) continue;
      const total = c.commands + c.readBytes + c.writeBytes;
      let base = this.#ioBase.get(s.session_id);
      if (base === undefined) {
        base = c.cumulative ? total : 0;
        this.#ioBase.set(s.session_id, base);
      }
      if (s.iscsi_login_at && total > base) {
        store.sessions.update(s.id, { io_seen_at: new Date(this.#clock()).toISOString() });
        changed = true;
      }
    }
    return changed;
  }

  async #checkResources(): Promise<void> {
    for (const t of this.d.store.targets.allActive()) this.#overlayAlert(t);
    const r = this.d.reserve;
    if (!r || r.percent <= 0) return;
    for (const dir of r.dirs) {
      try {
        const check = await checkReserve(dir, r.percent);
        this.alerts.set(!check.ok, {
          cause: `disk_reserve:${dir}`,
          severity: "critical",
          machine_id: null,
          message: check.reason ?? `free space on ${dir} is back above the reserve`,
          detail: { dir, free_bytes: check.free_bytes, reserve_bytes: check.reserve_bytes },
        });
      } catch (err) {
        this.d.log.debug({ dir, err: errorText(err) }, "free space not read");
      }
    }
  }

  /** Overlay usage at 80% and 95% of its image's size: the PC's writes will soon fail. */
  #overlayAlert(t: Target): void {
    if (t.overlay_allocated_bytes === null) return;
    const image = this.d.store.images.get(t.system_image_id);
    const size = image ? image.virtual_size_bytes || image.size_bytes : 0;
    if (!size) return;
    const percent = (t.overlay_allocated_bytes / size) * 100;
    const level = OVERLAY_LEVELS.find((l) => percent >= l.percent);
    for (const l of OVERLAY_LEVELS) {
      this.alerts.set(l === level, {
        cause: l.cause,
        severity: l.severity,
        machine_id: t.machine_id,
        message: `overlay of ${t.iqn} holds ${percent.toFixed(0)}% of its image's size (${l.percent}% threshold): reset it or enlarge the image`,
        detail: { target_id: t.id, percent: Math.round(percent * 10) / 10 },
      });
    }
  }
}
