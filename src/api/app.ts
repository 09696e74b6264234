import { Hono, type MiddlewareHandler } from "hono";
import type { Logger } from "pino";
import type { Store } from "../store/index.js";
import { TokenService } from "./auth/tokens.js";
import { errorBody } from "./errors.js";
import { mountRoutes } from "./mount.js";
import { docsRoutes } from "./openapi.js";
import { RateLimiter } from "./ratelimit.js";
import { requestId } from "./request-id.js";
import {
  type ApiDeps,
  type ApiServices,
  DEFAULT_RATE_LIMITS,
  type IscsiSettings,
  type RateLimits,
  type RouteDef,
  type RouteModule,
} from "./route.js";
import { MemoRouter } from "./router.js";
import { installEventAuth } from "./routes/events.js";
import { installMetrics } from "./routes/metrics.js";
import { ROUTE_MODULES } from "./routes.js";
import type { ApiEnv, DaemonState } from "./types.js";

export type { ApiEnv, DaemonState } from "./types.js";

export interface AppDeps {
  log: Logger;
  version: string;
  state: () => DaemonState;
  store: Store;
  /** HS256 key of the API's tokens (loadOrCreateSigningKey). */
  signingKey: Uint8Array;
  clock?: () => number;
  /** The contract's defaults when left out; tests raise them. */
  rateLimits?: Partial<RateLimits>;
  services?: ApiServices;
  iscsi?: Partial<IscsiSettings>;
  onTargetChanged?: (machineId: number) => void;
  directories?: Record<string, string>;
  /** <data_dir>/initial-admin-password, when the daemon manages one. */
  initialPasswordFile?: string;
  /** The modules to mount (ROUTE_MODULES by default). */
  modules?: readonly RouteModule[];
}

export const DEFAULT_ISCSI: IscsiSettings = {
  portalIp: "127.0.0.1",
  portalPort: 3260,
  iqnPrefix: "iqn.2024-01.io.bootfleet",
};

/**
 * The daemon's HTTP application: the REST API under /api (and the boot scripts iPXE
 * fetches, added by netboot). Every response has a request id; every error has the
 * contract's body; no stack trace ever reaches a client. Returns the route registry
 * with the app, for the OpenAPI document and the route × role tests.
 */
export function createApi(deps: AppDeps): { app: Hono<ApiEnv>; routes: readonly RouteDef[] } {
  const clock = deps.clock ?? Date.now;
  const tokens = new TokenService(deps.signingKey, deps.store, clock);
  const apiDeps: ApiDeps = {
    tokens,
    log: deps.log,
    store: deps.store,
    version: deps.version,
    state: deps.state,
    clock,
    services: deps.services ?? ({} as ApiServices),
    iscsi: { ...DEFAULT_ISCSI, ...deps.iscsi },
    onTargetChanged: deps.onTargetChanged ?? (() => {}),
    directories: deps.directories ?? {},
    initialPasswordFile: deps.initialPasswordFile,
  };
  const app = new Hono<ApiEnv>({ router: new MemoRouter() });
  app.use("*", requestId());
  const logRequest: MiddlewareHandler<ApiEnv> = async (c, next) => {
    const started = performance.now();
    await next();
    deps.log.debug(
      {
        request_id: c.get("requestId"),
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        duration_ms: Math.round((performance.now() - started) * 10) / 10,
      },
      "request",
    );
  };
  // The request line is logged at debug level only: nothing to time or build otherwise, and
  // not async then, so that it hands next()'s promise on without a turn of its own.
  app.use("*", (c, next) => (deps.log.isLevelEnabled("debug") ? logRequest(c, next) : next()));

  // Services' own middleware and /metrics, before the routes they wrap.
  installMetrics(app, apiDeps.services.metrics);
  installEventAuth(app);

  const apiRoutes = (deps.modules ?? ROUTE_MODULES).flatMap((m) => m(apiDeps));
  const routes: RouteDef[] = [...apiRoutes];
  routes.push(...docsRoutes(() => routes, deps.version));
  mountRoutes(app, routes, {
    tokens,
    limiter: new RateLimiter({ ...DEFAULT_RATE_LIMITS, ...deps.rateLimits }, clock),
    store: deps.store,
    log: deps.log,
    clock,
  });

  app.notFound((c) =>
    c.json(errorBody(c, "not_found", `no route for ${c.req.method} ${c.req.path}`), 404),
  );
  app.onError((err, c) => {
    deps.log.error({ err, request_id: c.get("requestId"), path: c.req.path }, "request failed");
    return c.json(
      errorBody(
        c,
        "internal_server_error",
        "internal error; the request id is in the daemon's log",
      ),
      500,
    );
  });
  return { app, routes };
}

export function createApp(deps: AppDeps): Hono<ApiEnv> {
  return createApi(deps).app;
}
