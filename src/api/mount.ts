import type { IncomingMessage } from "node:http";
import type { Context, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "pino";
import type { Store } from "../store/index.js";
import type { TokenService } from "./auth/tokens.js";
import { DEFAULT_MAX_BODY_BYTES, readBoundedText } from "./body-limit.js";
import { ApiError, errorBody } from "./errors.js";
import { localAdmin } from "./local-socket.js";
import { QueryMemo } from "./query-memo.js";
import { addressKey, type RateLimiter } from "./ratelimit.js";
import type { AuditNote, RouteDef } from "./route.js";
import type { ApiEnv, AuthUser } from "./types.js";
import { parseOr422 } from "./validate.js";

export interface MountContext {
  tokens: TokenService;
  limiter: RateLimiter;
  store: Store;
  log: Logger;
  clock: () => number;
}

const DEFAULT_OPERATION: Record<string, string> = {
  POST: "create",
  PUT: "update",
  PATCH: "update",
  DELETE: "delete",
};

/**
 * The Node request behind a Hono context: @hono/node-server passes it as `c.env`
 * (untyped there, so that the app stays callable as a plain fetch handler); in-process
 * tests may pass `{ incoming }` or nothing.
 */
export function nodeRequest(c: Context): IncomingMessage | undefined {
  return (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
}

/** The peer address of the connection. */
export function clientAddress(c: Context): string {
  return nodeRequest(c)?.socket?.remoteAddress ?? "local";
}

/**
 * Mounts declared routes under /api. One wrapper gives every route the same order of
 * checks (token → rate limit → 401/403 → validation → handler) and records every
 * state-changing request in history, whatever its outcome.
 */
export function mountRoutes(app: Hono<ApiEnv>, defs: readonly RouteDef[], m: MountContext) {
  for (const def of defs) {
    const queries = def.query ? new QueryMemo(def.query) : undefined;
    app.on(def.method, `/api${def.path}`, (c) => handle(def, c, m, queries));
  }
}

async function handle(
  def: RouteDef,
  c: Context<ApiEnv>,
  m: MountContext,
  queries: QueryMemo<NonNullable<RouteDef["query"]>> | undefined,
): Promise<Response> {
  const started = performance.now();
  const note: AuditNote = {};
  const rateHeaders: Record<string, string> = {};
  let user: AuthUser | undefined;
  let params: unknown;
  let out: unknown;
  let res: Response;
  try {
    let authError: ApiError | undefined;
    const header = c.req.header("authorization");
    user = localAdmin(c, m.store);
    if (user) c.set("user", user);
    else if (header !== undefined) {
      const match = /^Bearer[ \t]+([A-Za-z0-9._~+/=-]+)[ \t]*$/i.exec(header);
      if (!match) authError = new ApiError(401, "authentication_error", "expected a Bearer token");
      else {
        try {
          // A token verified already is answered without a turn of the microtask queue.
          user = m.tokens.kept(match[1]!) ?? (await m.tokens.verifyAccess(match[1]!));
          c.set("user", user);
        } catch (err) {
          if (!(err instanceof ApiError)) throw err;
          authError = err;
        }
      }
    }

    const cls = def.rateLimit ?? "general";
    if (cls !== "none" && m.limiter.counts(cls)) {
      // Authentication routes count per address: their callers have no user yet.
      const caller =
        user && cls !== "auth" ? `user:${user.id}` : `addr:${addressKey(clientAddress(c))}`;
      const d = m.limiter.hit(cls, caller);
      rateHeaders["X-RateLimit-Limit"] = String(d.limit);
      rateHeaders["X-RateLimit-Remaining"] = String(d.remaining);
      rateHeaders["X-RateLimit-Reset"] = String(d.reset);
      rateHeaders["X-RateLimit-Window"] = String(d.windowSeconds);
      if (!d.allowed) {
        const retry = Math.max(1, d.reset - Math.floor(m.clock() / 1000));
        rateHeaders["Retry-After"] = String(retry);
        throw new ApiError(
          429,
          "rate_limit_exceeded",
          `too many requests: at most ${d.limit} per ${d.windowSeconds} s; retry in ${retry} s`,
          { retry_after: retry },
        );
      }
    }

    if (def.roles !== "public") {
      if (!user) {
        throw authError ?? new ApiError(401, "authentication_error", "a Bearer token is required");
      }
      if (!def.roles.includes(user.role)) {
        throw new ApiError(
          403,
          "authorization_error",
          `the ${user.role} role may not ${def.method} ${def.path}`,
        );
      }
    }

    params = def.params ? parseOr422(def.params, c.req.param(), "params") : undefined;
    const query = queries?.parse(c.req.url, () => c.req.query());
    let body: unknown;
    if (def.body) {
      let raw: unknown;
      const text = await readBoundedText(c.req.raw, def.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES);
      try {
        // An empty body is "no body", so schemas that make the body optional accept it.
        raw = text.trim() === "" ? undefined : JSON.parse(text);
      } catch {
        throw new ApiError(400, "validation_error", "body: not valid JSON", { field: "body" });
      }
      body = parseOr422(def.body, raw, "body");
    }

    out = def.handler({
      c,
      params: params as never,
      query: query as never,
      body: body as never,
      user,
      audit: (n) => Object.assign(note, n),
    });
    // Most handlers answer at once: awaiting a plain value would cost a microtask turn.
    if (out instanceof Promise) out = await out;
    if (out instanceof Response) res = out;
    else if (def.status === 204) res = c.body(null, 204);
    else res = c.json(out as object, def.status ?? 200);
  } catch (err) {
    if (err instanceof ApiError) {
      res = c.json(errorBody(c, err.code, err.message, err.extra), err.status);
    } else {
      m.log.error(
        { err, request_id: c.get("requestId"), route: `${def.method} ${def.path}` },
        "request failed",
      );
      res = c.json(
        errorBody(
          c,
          "internal_server_error",
          "internal error; the request id is in the daemon's log",
        ),
        500 as ContentfulStatusCode,
      );
    }
  }

  res = withHeaders(res, rateHeaders);
  if (def.method !== "GET" && !def.noHistory) {
    record(def, c, m, note, user, params, out, res.status, performance.now() - started);
  }
  return res;
}

function withHeaders(res: Response, headers: Record<string, string>): Response {
  const entries = Object.entries(headers);
  if (!entries.length) return res;
  try {
    for (const [k, v] of entries) res.headers.set(k, v);
    return res;
  } catch {
    // Immutable headers (a fetched Response handed through): copy it.
    const copy = new Response(res.body, res);
    for (const [k, v] of entries) copy.headers.set(k, v);
    return copy;
  }
}

function record(
  def: RouteDef,
  c: Context<ApiEnv>,
  m: MountContext,
  note: AuditNote,
  user: AuthUser | undefined,
  params: unknown,
  out: unknown,
  status: number,
  durationMs: number,
) {
  try {
    const resource = def.resource ?? def.tag;
    const outId =
      out && typeof out === "object" && "id" in out ? (out as { id: unknown }).id : undefined;
    const paramId = (params as { id?: unknown } | undefined)?.id;
    const rawId = note.resource_id ?? paramId ?? outId ?? null;
    const resourceId = rawId === null || rawId === undefined ? null : String(rawId);
    let machineId =
      note.machine_id ?? (resource === "machine" && rawId !== null ? Number(rawId) : null);
    // A deleted machine cannot be referenced any more; its id stays in resource_id.
    if (machineId !== null && !m.store.machines.get(machineId)) machineId = null;
    let userId = user?.id ?? note.user_id ?? null;
    if (userId !== null && !m.store.users.get(userId)) userId = null;
    m.store.history.record({
      request_id: c.get("requestId") ?? null,
      user_id: userId,
      username: user?.username ?? note.username ?? null,
      resource_type: resource,
      resource_id: resourceId,
      operation: def.operation ?? DEFAULT_OPERATION[def.method] ?? def.method.toLowerCase(),
      status: status < 400 ? "success" : "failure",
      duration_ms: Math.round(durationMs),
      machine_id: machineId,
      detail: { method: def.method, path: c.req.path, http_status: status, ...(note.detail ?? {}) },
    });
  } catch (err) {
    m.log.error({ err, request_id: c.get("requestId") }, "could not record history");
  }
}
