/**
 * Why the update cycle refused a request. The room knows nothing of HTTP: the API's
 * image-versions route maps each code onto a status and the contract's error body.
 */
export type VersionErrorCode =
  /** No such image, update, version or target. */
  | "not_found"
  /** A body field names nothing that exists (`details.field`). */
  | "invalid_reference"
  /** The image is not ready (importing, failed) or has no version yet. */
  | "not_ready"
  /** The machine does not boot the image: it cannot be its super-client. */
  | "machine_not_on_image"
  /** The image already has an open update (`details.update_id`, `details.machine_id`). */
  | "update_open"
  /** The update was committed or discarded already. */
  | "update_closed"
  /** The super-client never booted its draft: nothing to commit. */
  | "not_booted"
  /** The machine is running (`details.machine_id`, `details.session_id`). */
  | "live_session"
  /** The free-space reserve refuses a new version or overlay. */
  | "insufficient_space"
  /** The iSCSI side (overlay driver) is not running, or cannot make versions. */
  | "unavailable"
  /** The machine resets its overlay at every boot: it has no writeback to snapshot or promote. */
  | "reset_policy"
  /** The target has no overlay yet (it never booted): nothing to snapshot or promote. */
  | "no_writeback"
  /** The snapshot was taken of another image than the one the target boots now. */
  | "snapshot_mismatch";

export class VersionError extends Error {
  override name = "VersionError";
  constructor(
    readonly code: VersionErrorCode,
    message: string,
    /** Facts a caller may show: the open update, the running machine, the field at fault. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}
