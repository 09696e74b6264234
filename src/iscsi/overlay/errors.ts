export type OverlayErrorCode =
  | "INVALID_NAME"
  | "NO_REFLINK"
  | "CROSS_DEVICE"
  | "NO_SPACE"
  | "NOT_FOUND"
  | "NOT_THIN"
  | "COMMAND_FAILED"
  | "IO";

export interface OverlayErrorDetails {
  overlayId?: string;
  path?: string;
  cause?: unknown;
}

/** Every failure of an overlay driver: `code` is for programs, the message for the operator. */
export class OverlayError extends Error {
  readonly code: OverlayErrorCode;
  readonly overlayId: string | undefined;
  readonly path: string | undefined;

  constructor(code: OverlayErrorCode, message: string, details: OverlayErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "OverlayError";
    this.code = code;
    this.overlayId = details.overlayId;
    this.path = details.path;
  }
}

export function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** Errno values with which the kernel or libuv says "this file system cannot clone". */
export const NO_CLONE_ERRNOS: ReadonlySet<string> = new Set([
  "EOPNOTSUPP",
  "ENOTSUP",
  "ENOTTY",
  "EINVAL",
  "ENOSYS",
]);

export function isNoSpace(err: unknown): boolean {
  const code = errnoCode(err);
  return code === "ENOSPC" || code === "EDQUOT";
}
