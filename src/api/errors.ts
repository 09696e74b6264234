import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ApiEnv } from "./types.js";

/** The error codes of the GGnet contract, plus the two an appliance adds. */
export type ErrorCode =
  | "authentication_error"
  | "authorization_error"
  | "validation_error"
  | "not_found"
  | "conflict_error"
  | "payload_too_large"
  | "insufficient_storage"
  | "rate_limit_exceeded"
  | "service_unavailable"
  | "internal_server_error";

/** An error a route throws on purpose: it becomes the contract's error body. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: ErrorCode,
    detail: string,
    /** Extra fields for the body, e.g. the field that failed validation. */
    readonly extra: Record<string, unknown> = {},
  ) {
    super(detail);
    this.name = "ApiError";
  }
}

/**
 * `{"error", "detail", "timestamp"}` as the GGnet document specifies, plus the request id
 * so an admin can find the matching log line (PMI Dashboard's convention).
 */
export function errorBody(
  c: Context<ApiEnv>,
  code: ErrorCode,
  detail: string,
  extra: Record<string, unknown> = {},
) {
  return {
    error: code,
    detail,
    timestamp: Math.floor(Date.now() / 1000),
    request_id: c.get("requestId") as string | undefined,
    ...extra,
  };
}
