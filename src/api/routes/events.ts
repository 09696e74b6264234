import { upgradeWebSocket } from "@hono/node-server";
import type { Context, Hono, MiddlewareHandler } from "hono";
import type { WebSocket } from "ws";
import * as z from "zod";
import {
  type BusEvent,
  type Delivery,
  EVENT_TYPES,
  type EventType,
  type Subscription,
} from "../../events/bus.js";
import type { EventStreams, StreamSlot } from "../../events/streams.js";
import { ApiError } from "../errors.js";
import { nodeRequest } from "../mount.js";
import { ANY_USER, type ApiDeps, type AuthUser, defineRoute, type RouteModule } from "../route.js";
import type { ApiEnv } from "../types.js";

declare module "../route.js" {
  interface ApiServices {
    /** The event bus as the API streams it (the daemon ends every stream at shutdown). */
    events?: EventStreams;
  }
}

/** Close codes a WebSocket client can act on (4000-4999 are the application's). */
export const WS_CLOSE = {
  shutdown: 1001,
  /** The client read too slowly: events were lost; reconnect with ?after=<last id>. */
  tooSlow: 1013,
  /** The token expired or the session was revoked: log in (or refresh) and reconnect. */
  unauthorized: 4001,
} as const;

const typesParam = z
  .string()
  .max(500)
  .optional()
  .transform((s, ctx) => {
    if (s === undefined || s.trim() === "") return undefined;
    const out: EventType[] = [];
    for (const raw of s.split(",")) {
      const t = raw.trim();
      if (!(EVENT_TYPES as readonly string[]).includes(t)) {
        ctx.addIssue({
          code: "custom",
          message: `unknown event type; one of ${EVENT_TYPES.join(", ")}`,
        });
        return z.NEVER;
      }
      out.push(t as EventType);
    }
    return out;
  });

const streamQuery = z.object({
  types: typesParam,
  /** Resume after this event id (EventSource sends Last-Event-ID by itself). */
  after: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

/** What a client receives for one event, in SSE `data:` and WebSocket messages alike. */
export function eventMessage(d: Delivery) {
  return {
    id: d.event.id,
    type: d.event.type,
    at: d.event.at,
    payload: d.event.payload,
    ...(d.droppedBefore > 0 ? { dropped_before: d.droppedBefore } : {}),
  };
}

/**
 * Which events a caller may see: a client only those of machines it owns (an event with
 * no machine, such as an image upload or a job, is not a client's business).
 */
export function eventFilter(deps: ApiDeps, user: AuthUser): (e: BusEvent) => boolean {
  if (user.role !== "client") return () => true;
  const machines = deps.store.machines;
  return (e) => {
    const id = (e.payload as { machine_id?: unknown }).machine_id;
    if (typeof id !== "number") return false;
    return machines.ownerOf(id) === user.id;
  };
}

function bearerToken(c: Context<ApiEnv>): string | undefined {
  return /^Bearer[ \t]+(\S+)/i.exec(c.req.header("authorization") ?? "")?.[1];
}

/** A stream outlives its token's check at connect time: logout and expiry must end it. */
async function stillAuthorized(deps: ApiDeps, token: string, user: AuthUser): Promise<boolean> {
  try {
    const now = await deps.tokens.verifyAccess(token);
    return now.id === user.id && now.role === user.role;
  } catch {
    return false;
  }
}

/**
 * Browsers' EventSource and WebSocket cannot set an Authorization header, so these two
 * paths also take `?token=`; it is moved into the header the route wrapper checks. Request
 * logs and history record the path only, never the query, so the token is not logged.
 */
export function installEventAuth(app: Hono<ApiEnv>): void {
  const fromQuery: MiddlewareHandler = async (c, next) => {
    const token = c.req.query("token");
    if (token && c.req.header("authorization") === undefined) {
      c.req.raw.headers.set("authorization", `Bearer ${token}`);
    }
    await next();
  };
  app.use("/api/events", fromQuery);
  app.use("/api/ws", fromQuery);
}

function resumeFrom(c: Context<ApiEnv>, after: number | undefined): number {
  const header = Number(c.req.header("last-event-id"));
  if (Number.isInteger(header) && header > 0) return header;
  return after ?? 0;
}

/** /api/events (Server-Sent Events, or recent events as JSON) and /api/ws (WebSocket). */
export const eventsRoutes: RouteModule = (deps) => [
  defineRoute({
    method: "GET",
    path: "/events",
    tag: "events",
    summary:
      "Live events as Server-Sent Events (Accept: text/event-stream; token also as ?token=), else the recent events as JSON",
    roles: ANY_USER,
    query: streamQuery,
    handler: ({ c, query, user }) => {
      const streams = deps.services.events;
      const filter = eventFilter(deps, user!);
      const after = resumeFrom(c, query.after);
      if (!/text\/event-stream/i.test(c.req.header("accept") ?? "")) {
        if (!streams) return [];
        const events = streams.recent(after, filter, query.types);
        const page = after > 0 ? events.slice(0, query.limit) : events.slice(-query.limit);
        return page.map((event) => eventMessage({ event, droppedBefore: 0 }));
      }
      if (!streams || streams.closed) {
        throw new ApiError(503, "service_unavailable", "the event stream is not available");
      }
      const token = bearerToken(c)!;
      const slot = reserveStream(streams, user!);
      return sseResponse(c, deps, streams, slot, user!, token, filter, query.types, after);
    },
  }),
  defineRoute({
    method: "GET",
    path: "/ws",
    tag: "events",
    summary:
      "Live events over a WebSocket (token as Bearer header or ?token=); without Upgrade, how to connect",
    roles: ANY_USER,
    query: streamQuery,
    handler: async ({ c, query, user }) => {
      if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
        return {
          websocket: "/api/ws",
          authentication: "Authorization: Bearer <access token>, or ?token=<access token>",
          resume: "?after=<last event id>",
          filter: "?types=<comma-separated event types>",
          event_types: EVENT_TYPES,
          message: { id: "number", type: "string", at: "ISO 8601", payload: "object" },
        };
      }
      const streams = deps.services.events;
      if (!streams || streams.closed) {
        throw new ApiError(503, "service_unavailable", "the event stream is not available");
      }
      const token = bearerToken(c)!;
      const filter = eventFilter(deps, user!);
      const after = resumeFrom(c, query.after);
      let sub: Subscription | undefined;
      const slot = reserveStream(streams, user!);
      // A handshake that never completes must not keep the slot.
      const unopened = setTimeout(() => {
        if (!sub) slot.release();
      }, 30_000).unref();
      const upgrade = upgradeWebSocket(() => ({
        onOpen: (_e, ws) => {
          clearTimeout(unopened);
          sub = streams.subscribe(filter, query.types);
          void pumpWebSocket(
            deps,
            streams,
            sub,
            ws.raw as unknown as WebSocket,
            token,
            user!,
            filter,
            query.types,
            after,
          );
        },
        onClose: () => {
          clearTimeout(unopened);
          slot.release();
          if (sub) streams.release(sub);
        },
      }));
      const res = await upgrade(c, async () => {});
      if (!res) {
        clearTimeout(unopened);
        slot.release();
        throw new ApiError(400, "validation_error", "not a WebSocket upgrade request");
      }
      return res;
    },
  }),
];

/** One of the user's stream slots, or 429 when all are taken. */
function reserveStream(streams: EventStreams, user: AuthUser): StreamSlot {
  const slot = streams.reserve(user.id);
  if (slot) return slot;
  throw new ApiError(
    429,
    "rate_limit_exceeded",
    `too many event streams: ${user.username} already has ${streams.maxPerUser} open (SSE and WebSocket together); close one first`,
    { max_streams: streams.maxPerUser },
  );
}

function sseFrame(d: Delivery): Uint8Array {
  return Buffer.from(
    `id: ${d.event.id}\nevent: ${d.event.type}\ndata: ${JSON.stringify(eventMessage(d))}\n\n`,
  );
}

/**
 * A pull stream: the next event is taken from the subscription only when the socket has
 * room for it (the Node adapter waits for 'drain'), so a client that stops reading fills
 * its bounded subscription queue and is disconnected instead of growing our memory.
 */
function sseResponse(
  c: Context<ApiEnv>,
  deps: ApiDeps,
  streams: EventStreams,
  slot: StreamSlot,
  user: AuthUser,
  token: string,
  filter: (e: BusEvent) => boolean,
  types: readonly EventType[] | undefined,
  after: number,
): Response {
  const sub = streams.subscribe(filter, types);
  // Subscribed first, then the backlog read: nothing falls between the two.
  const backlog = after > 0 ? streams.recent(after, filter, types) : [];
  let lastSent = backlog.at(-1)?.id ?? after;
  let greeted = false;
  let checkedAt = Date.now();
  let finished = false;
  const finish = () => {
    finished = true;
    stopWatch();
    streams.release(sub);
    slot.release();
  };
  // A client that stopped reading stalls pull(), so nothing inside it sees the
  // subscription end (overflow or shutdown): the connection is cut from outside.
  const stopWatch = watchStalled(
    sub,
    streams,
    () => finished,
    () => {
      finish();
      nodeRequest(c)?.socket?.destroy();
    },
  );
  const body = new ReadableStream<Uint8Array>(
    {
      pull: async (controller) => {
        if (!greeted) {
          greeted = true;
          controller.enqueue(Buffer.from("retry: 3000\n: bootfleet events\n\n"));
          return;
        }
        const old = backlog.shift();
        if (old) {
          controller.enqueue(sseFrame({ event: old, droppedBefore: 0 }));
          return;
        }
        for (;;) {
          const d = await sub.next(AbortSignal.timeout(streams.heartbeatMs));
          // Checked when idle and at least once per heartbeat on a busy stream too.
          const due = !d || Date.now() - checkedAt >= streams.heartbeatMs;
          if (due) checkedAt = Date.now();
          if (sub.closed || (due && !(await stillAuthorized(deps, token, user)))) {
            finish();
            controller.close();
            return;
          }
          if (!d) {
            controller.enqueue(Buffer.from(": ping\n\n"));
            return;
          }
          if (d.event.id <= lastSent) continue;
          lastSent = d.event.id;
          controller.enqueue(sseFrame(d));
          return;
        }
      },
      cancel: finish,
    },
    { highWaterMark: 0 },
  );
  return new Response(body, {
    status: 200,
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-store",
      // a reverse proxy must pass events through as they come
      "x-accel-buffering": "no",
    },
  });
}

/**
 * Calls `cut` once the subscription has ended but its stream has not finished within a
 * tick: the consumer is stuck behind a full socket. Returns the function that stops it.
 */
function watchStalled(
  sub: Subscription,
  streams: EventStreams,
  done: () => boolean,
  cut: () => void,
): () => void {
  const timer = setInterval(
    () => {
      if (done()) clearInterval(timer);
      else if (sub.closed) {
        clearInterval(timer);
        cut();
      }
    },
    Math.min(500, streams.heartbeatMs),
  );
  timer.unref();
  return () => clearInterval(timer);
}

function send(ws: WebSocket, data: string): Promise<Error | undefined> {
  return new Promise((resolve) => ws.send(data, (err) => resolve(err ?? undefined)));
}

/**
 * Each message waits until the previous one was handed to the kernel: a client that does
 * not read stalls this loop, its subscription queue fills, and it is disconnected.
 */
async function pumpWebSocket(
  deps: ApiDeps,
  streams: EventStreams,
  sub: Subscription,
  ws: WebSocket,
  token: string,
  user: AuthUser,
  filter: (e: BusEvent) => boolean,
  types: readonly EventType[] | undefined,
  after: number,
): Promise<void> {
  let closeCode: number | undefined;
  let reason = "";
  let checkedAt = Date.now();
  let finished = false;
  const end = () => {
    if (finished) return;
    finished = true;
    stopWatch();
    streams.release(sub);
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) {
      ws.close(closeCode ?? 1000, reason);
      // A peer that never answers the close frame (or never reads) is cut off.
      setTimeout(() => ws.terminate(), 1000).unref();
    }
  };
  // A send to a client that stopped reading never completes: end it from outside.
  const stopWatch = watchStalled(
    sub,
    streams,
    () => finished,
    () => {
      [closeCode, reason] = endReason(sub);
      end();
    },
  );
  try {
    const backlog = after > 0 ? streams.recent(after, filter, types) : [];
    let lastSent = after;
    for (const event of backlog) {
      if (await send(ws, JSON.stringify(eventMessage({ event, droppedBefore: 0 })))) return;
      lastSent = event.id;
    }
    for (;;) {
      const d = await sub.next(AbortSignal.timeout(streams.heartbeatMs));
      if (ws.readyState !== ws.OPEN) return;
      if (!d) {
        if (sub.closed) {
          [closeCode, reason] = endReason(sub);
          return;
        }
        ws.ping();
      }
      if (!d || Date.now() - checkedAt >= streams.heartbeatMs) {
        checkedAt = Date.now();
        if (!(await stillAuthorized(deps, token, user))) {
          closeCode = WS_CLOSE.unauthorized;
          reason = "token expired or revoked";
          return;
        }
      }
      if (!d) continue;
      if (d.event.id <= lastSent) continue;
      lastSent = d.event.id;
      if (await send(ws, JSON.stringify(eventMessage(d)))) return;
    }
  } catch (err) {
    deps.log.warn({ err: (err as Error).message }, "event WebSocket failed");
    closeCode = 1011;
    reason = "internal error";
  } finally {
    end();
  }
}

function endReason(sub: Subscription): [number, string] {
  return sub.endReason === "overflow"
    ? [WS_CLOSE.tooSlow, "too slow: events were dropped; reconnect with ?after=<last id>"]
    : [WS_CLOSE.shutdown, "server shutting down"];
}
