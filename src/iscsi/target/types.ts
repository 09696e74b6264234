/** One logical unit of a machine's target. */
export interface LunSpec {
  /** LUN number as the initiator sees it (LIO: system disk is 0; tgt: 1, its 0 is the controller). */
  lun: number;
  /** Backing file (reflink overlay) or block device (lvm-thin). */
  path: string;
  kind: "file" | "block";
  readOnly: boolean;
  /** Size LIO's fileio backstore is created with; tgt takes the backing file's own size. */
  sizeBytes: number;
  /** Stable unit serial (VPD 0x80), so the client OS sees the same disk after every restart. */
  wwn: string;
}

export interface AclSpec {
  initiatorIqn: string;
  chapUser: string;
  chapPassword: string;
  /** Mutual CHAP: what the target answers with, so the client can check the server too. */
  mutualUser?: string;
  mutualPassword?: string;
}

export interface TargetSpec {
  iqn: string;
  portal: { address: string; port: number };
  luns: LunSpec[];
  acl: AclSpec;
}

export interface TargetSession {
  initiatorIqn: string;
  address?: string;
}

/** What a target served its logged-in initiators (completed I/O). */
export interface TargetIo {
  readBytes: number;
  writeBytes: number;
  commands: number;
  /**
   * True when the counters run across sessions (LIO's per-LUN statistics): only a rise
   * between two readings is I/O of this boot. False or absent: they count this login's.
   */
  cumulative?: boolean;
}

export interface RemoveOptions {
  /**
   * Remove even while an initiator is logged in. Off by default: removing a target
   * under a booted machine kills it, so the caller has to mean it.
   */
  force?: boolean;
}

export interface TargetDriver {
  readonly name: "lio" | "tgt";
  /** The LUN number the system disk gets with this driver. */
  readonly firstLun: 0 | 1;
  /** Create or change one target, idempotent, never touching others. */
  apply(spec: TargetSpec): Promise<void>;
  /** Remove one target; refuses while a session is logged in unless forced. */
  remove(iqn: string, options?: RemoveOptions): Promise<void>;
  /** IQNs under bootfleet's prefix that are running or persisted, so orphans can be found. */
  list(): Promise<string[]>;
  /** Who is logged in to this target now. */
  sessions(iqn: string): Promise<TargetSession[]>;
  /**
   * Who is logged in to each of bootfleet's running targets, from one read of the driver's
   * state, for a poll over every target (tgt lists all targets in one answer: asking per
   * target read and parsed that whole list once per target). A target missing from the
   * map is not running. Absent where the driver has no cheaper way than sessions(iqn).
   */
  allSessions?(): Promise<Map<string, TargetSession[]>>;
  /** I/O served to the sessions logged in now; absent where the driver cannot count it. */
  io?(iqn: string): Promise<TargetIo>;
  /**
   * io() of each of bootfleet's running targets from one read of the driver's state, for
   * the fleet's poll over every booting machine (tgt: asking per target read the whole
   * target listing and a stat per target: in a 100-PC storm that was ~40 listings a second
   * through tgtd's one loop while the PCs read their disks). A target missing from the
   * map is not running. Absent where io(iqn) is as cheap.
   */
  allIo?(): Promise<Map<string, TargetIo>>;
  /**
   * New incoming CHAP credentials for a boot that the driver made ready beforehand, so the
   * apply that follows changes the least in the target server (tgt: a spare account bound
   * in place of the last boot's, tgt-spares.ts). `currentUser`: the user the store holds
   * now. Undefined: none ready (or the driver has none); the caller picks a fresh secret.
   */
  readySecret?(iqn: string, currentUser: string): { user: string; password: string } | undefined;
}

export class TargetError extends Error {
  constructor(
    readonly iqn: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`target ${iqn}: ${message}`, options);
    this.name = "TargetError";
  }
}
