/** The API's shapes as the dashboard reads them (fields it does not use are left out). */

export interface Machine {
  id: number;
  name: string;
  description: string;
  mac_address: string;
  ip_address: string | null;
  hostname: string | null;
  boot_mode: string;
  status: string;
  status_reason: string | null;
  is_online: boolean;
  location: string;
  room: string;
  asset_tag: string;
  boot_action: string;
  boot_image_id: number | null;
  overlay_policy: string;
  owner_user_id: number | null;
  bmc_address: string | null;
  last_seen: string | null;
  last_boot: string | null;
  boot_count: number;
  /** Rooms as a resource (the locations): present once the API has them. */
  location_id?: number | null;
  /** The live boot state, once the API derives it (see MACHINE_STATES). */
  state?: string;
  state_since?: string | null;
}

export interface Location {
  id: number;
  name: string;
  description?: string;
}

export interface Phases {
  dhcp_offer_at: string | null;
  tftp_done_at: string | null;
  script_served_at: string | null;
  iscsi_login_at: string | null;
  iscsi_logout_at: string | null;
  /** The latest login of the same boot after the first: the booted OS taking its disk over. */
  iscsi_relogin_at?: string | null;
}

export interface Session {
  id: number;
  session_id: string;
  status: string;
  machine_id: number;
  machine_name: string;
  boot_method: string | null;
  client_ip: string | null;
  started_at: string;
  ended_at: string | null;
  duration_seconds: number;
  phases?: Phases;
  /** iSCSI logins in this boot: iPXE's, then the booted OS's own (initramfs, iscsid). */
  iscsi_logins?: number;
  error?: string | null;
}

export interface Target {
  id: number;
  name: string;
  iqn: string;
  portal_ip: string;
  portal_port: number;
  target_type: string;
  status: string;
  status_reason: string | null;
  system_image_name: string | null;
  extra_disk_image_name: string | null;
  extra_disk_mountpoint: string | null;
  initiator_iqn: string;
  machine_id?: number;
  machine_name?: string;
  system_image_id?: number;
  extra_disk_image_id?: number | null;
  /** The version it is pinned to; null: it follows the image's current version. */
  pinned_version?: number | null;
  /** The version its overlay was cloned from (null: no overlay yet). */
  overlay_version?: number | null;
  /** Versions made after its overlay's, up to the one it follows. */
  versions_behind?: number | null;
  /** Overlay usage, once the API reports it on targets. */
  overlay_allocated_bytes?: number | null;
  overlay_size_bytes?: number | null;
  overlay_usage_at?: string | null;
}

export interface Image {
  id: number;
  name: string;
  description: string;
  format: string;
  size_bytes: number;
  virtual_size_bytes: number | null;
  status: string;
  status_reason: string | null;
  image_type: string;
  current_version: number | null;
  created_at: string;
  created_by_username: string | null;
}

export interface ImageVersion {
  id?: number;
  version: number;
  status?: string;
  size_bytes?: number;
  created_at?: string;
  comment?: string | null;
  current?: boolean;
  is_current?: boolean;
  /** Targets, drafts and snapshots resting on it. */
  in_use_by?: number;
  created_by_username?: string | null;
}

/** An update of an image on a super-client (open, then committed or discarded). */
export interface ImageUpdate {
  id: number;
  image_id: number;
  machine_id: number;
  machine_name: string | null;
  base_version: number;
  status: "open" | "committed" | "discarded";
  comment: string;
  draft_booted_at: string | null;
  committed_version: number | null;
  created_at: string;
  closed_at: string | null;
}

/** A writeback snapshot of a persistent machine's target. */
export interface Snapshot {
  id: number;
  target_id: number;
  image_id: number;
  image_version: number | null;
  comment: string;
  size_bytes: number;
  created_by_username: string | null;
  created_at: string;
}

export interface JobStep {
  name: string;
  status: string;
}

export interface Job {
  id: number;
  type: string;
  status: string;
  progress: number;
  steps: JobStep[];
  result: unknown;
  error: string | null;
  created_by: number | null;
  created_by_username: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface JobLogs {
  job_id: number;
  status: string;
  logs: { id: number; timestamp: string; level: string; message: string }[];
  next_after: number;
}

export interface Alert {
  id: number;
  level: "info" | "warning" | "critical";
  source: string;
  message: string;
  machine_id?: number | null;
  created_at: string;
  acknowledged_at?: string | null;
  acknowledged_by?: string | null;
}

export interface StorageArea {
  path: string;
  total_bytes: number;
  used_bytes: number;
  free_bytes: number;
  usage_percent: number;
}
