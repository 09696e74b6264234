/**
 * The route kit: every API route is declared once, as data, with the roles that may
 * call it and the zod schemas of its input. `mountRoutes` (mount.ts) turns the
 * declarations into Hono handlers that all behave the same way: rate limit → auth →
 * role → validation (422 naming the field) → handler → history record. The route
 * × role matrix test, the OpenAPI document and /api/docs all read the same registry,
 * so a route cannot exist without a declared role.
 *
 * How to declare a route module (paths are relative to /api, Hono syntax):
 *
 *   import { z } from "zod";
 *   import { defineRoute, type RouteModule, READERS, OPERATORS, listQuery, sendList } from "../route.js";
 *
 *   export const widgetRoutes: RouteModule = (deps) => [
 *     defineRoute({
 *       method: "GET", path: "/widgets", tag: "widgets", summary: "List widgets",
 *       roles: READERS,
 *       query: listQuery({ sort: WIDGET_SORTS }, { status: z.enum(["a", "b"]).optional() }),
 *       handler: ({ c, query }) => {
 *         // SQL lives in src/store only: the repository owns the list's read model.
 *         const { rows, total } = deps.store.widgets.listRows(query, { status: query.status });
 *         return sendList(c, rows.map(widgetView), total, query);
 *       },
 *     }),
 *     defineRoute({
 *       method: "POST", path: "/widgets/:id/poke", tag: "widgets", summary: "Poke a widget",
 *       roles: OPERATORS, resource: "widget", operation: "poke", status: 201,
 *       params: idParams, body: z.object({ force: z.boolean().default(false) }).strict(),
 *       handler: ({ params, body, user, audit }) => {
 *         audit({ resource_id: params.id, machine_id: null });
 *         return { ok: true };                     // a plain value is sent as JSON
 *       },
 *     }),
 *   ];
 *
 * then append one line to the array in routes.ts. Services a module needs and the app
 * does not know yet are added to `ApiServices` by module augmentation:
 *
 *   declare module "../route.js" { interface ApiServices { jobs?: JobRunner } }
 *
 * (optional, so apps built without them still type-check; answer 503
 * service_unavailable when one is missing.) Handlers throw `ApiError` for failures; a
 * domain room throws its own error class with a code (ImageError, PowerError) and the
 * route maps it onto an `ApiError` (see imageApiError in routes/images.ts).
 */
import type { Context } from "hono";
import type { Logger } from "pino";
import type * as z from "zod";
import type { Store } from "../store/index.js";
import type { Role } from "../store/users.js";
import type { TokenService } from "./auth/tokens.js";
import type { ApiEnv, AuthUser, DaemonState } from "./types.js";

export type { Role } from "../store/users.js";
export { ROLES } from "../store/users.js";
export { ApiError } from "./errors.js";
export { type ListQuery, listQuery, sendList } from "./list.js";
export type { ApiEnv, AuthUser, DaemonState } from "./types.js";
export { idParams, zName, zOptionalText, zText } from "./validate.js";

/** Everyone with an account (a client only ever sees its own machines: the handler filters). */
export const ANY_USER: readonly Role[] = ["admin", "operator", "viewer", "client"];
/** Read-only access to the whole fleet. */
export const READERS: readonly Role[] = ["admin", "operator", "viewer"];
/** Day-to-day changes: machines, targets, sessions, power. */
export const OPERATORS: readonly Role[] = ["admin", "operator"];
export const ADMIN_ONLY: readonly Role[] = ["admin"];

/** Which bucket of the rate limiter a route counts against ("none": never limited). */
export type RateLimitClass = "general" | "auth" | "refresh" | "upload" | "none";

export interface RateLimitRule {
  limit: number;
  windowSeconds: number;
}
export type RateLimits = Record<Exclude<RateLimitClass, "none">, RateLimitRule>;

/**
 * The contract's defaults (GGnet: general 100/min, auth 5 per 5 min, upload 3/min), and
 * token refreshes counted apart from logins (a UI refreshes every few minutes per tab).
 */
export const DEFAULT_RATE_LIMITS: RateLimits = {
  general: { limit: 100, windowSeconds: 60 },
  auth: { limit: 5, windowSeconds: 300 },
  refresh: { limit: 30, windowSeconds: 300 },
  upload: { limit: 3, windowSeconds: 60 },
};

/**
 * Services owned by other rooms (jobs, events, images, power, metrics...). Extended by
 * module augmentation from the route modules that need them; see the header.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by module augmentation
export interface ApiServices {}

/** Where the iSCSI targets the API creates are reached, and how they are named. */
export interface IscsiSettings {
  portalIp: string;
  portalPort: number;
  /** e.g. "iqn.2024-01.io.bootfleet": target IQNs are `<prefix>:<machine-name>`. */
  iqnPrefix: string;
}

/** What every route module gets: the store, the logger, the clock and the services. */
export interface ApiDeps {
  log: Logger;
  store: Store;
  version: string;
  /** The daemon's lifecycle state (health answers 503 unless "ready"). */
  state: () => DaemonState;
  /** Milliseconds since the epoch; a fake one in tests. */
  clock: () => number;
  services: ApiServices;
  iscsi: IscsiSettings;
  /** Issues and checks the API's tokens (auth routes use it directly). */
  tokens: TokenService;
  /** Called after a target of this machine was created or deleted (iSCSI reconciler). */
  onTargetChanged: (machineId: number) => void;
  /** Folders shown by /api/health/detailed, by label. */
  directories: Record<string, string>;
  /** The one-time admin password file, retired after changes to users (auth/initial-admin.ts). */
  initialPasswordFile?: string | undefined;
}

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/** What a handler may add to the history record of its request. */
export interface AuditNote {
  resource_id?: string | number | null;
  machine_id?: number | null;
  /** Never a secret: passwords, CHAP and BMC credentials stay out. */
  detail?: Record<string, unknown>;
  /** Who acted, when the route is public (a login names the user it logged in). */
  username?: string;
  user_id?: number;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface HandlerArgs<P, Q, B> {
  c: Context<ApiEnv>;
  params: Out<P>;
  query: Out<Q>;
  body: Out<B>;
  /** Undefined only on public routes called without a token. */
  user: AuthUser | undefined;
  audit: (note: AuditNote) => void;
}

export interface RouteDef<
  P extends z.ZodType | undefined = z.ZodType | undefined,
  Q extends z.ZodType | undefined = z.ZodType | undefined,
  B extends z.ZodType | undefined = z.ZodType | undefined,
> {
  method: HttpMethod;
  /** Relative to /api, Hono syntax: "/machines/:id". */
  path: string;
  /** Who may call it; "public" needs no token (login, health, docs). */
  roles: readonly Role[] | "public";
  summary: string;
  /** Groups routes in the OpenAPI document and /api/docs. */
  tag: string;
  params?: P;
  query?: Q;
  /** A JSON body schema. Leave it out for bodies the handler reads itself (multipart). */
  body?: B;
  /** Largest JSON body accepted (413 beyond): DEFAULT_MAX_BODY_BYTES (64 KiB) by default. */
  maxBodyBytes?: number;
  /** Status of a plain-value answer: 200 by default. */
  status?: 200 | 201 | 202 | 204;
  /** "general" by default. */
  rateLimit?: RateLimitClass;
  /** History record of state-changing requests: resource type (default: the tag). */
  resource?: string;
  /** Operation name in history (default: create/update/delete from the method). */
  operation?: string;
  /** Kept out of history entirely (reads never are recorded anyway). */
  noHistory?: boolean;
  /** Hides the route from OpenAPI (still in the role matrix). */
  hidden?: boolean;
  handler: (args: HandlerArgs<P, Q, B>) => unknown | Promise<unknown>;
}

/** Identity function that gives the handler typed params/query/body. */
export function defineRoute<
  P extends z.ZodType | undefined = undefined,
  Q extends z.ZodType | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(def: RouteDef<P, Q, B>): RouteDef {
  return def as unknown as RouteDef;
}

/** A resource's routes, built from the app's dependencies. */
export type RouteModule = (deps: ApiDeps) => readonly RouteDef[];
