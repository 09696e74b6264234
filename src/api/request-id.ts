import { randomUUID } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import type { ApiEnv } from "./types.js";

/**
 * Every response carries X-Request-Id. A caller's own id is kept when it is short and
 * plain (so a proxy's id can be followed through), otherwise a fresh one is made: the id
 * goes into logs, so it must not carry anything a client chose freely.
 */
export function requestId(): MiddlewareHandler<ApiEnv> {
  // Not async: it has nothing to do after the request, so it hands next()'s promise on.
  return (c, next) => {
    const given = c.req.header("x-request-id");
    const id = given && /^[A-Za-z0-9._-]{1,64}$/.test(given) ? given : randomUUID();
    c.set("requestId", id);
    c.header("X-Request-Id", id);
    return next();
  };
}
