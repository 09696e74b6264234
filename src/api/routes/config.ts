import { ApiError } from "../errors.js";
import { defineRoute, READERS, type RouteModule } from "../route.js";

declare module "../route.js" {
  interface ApiServices {
    /** The effective configuration, every secret-named key masked (the daemon's). */
    config?: () => Record<string, unknown>;
  }
}

/**
 * GET /api/config: the configuration the daemon runs with (file values over defaults),
 * read-only, with passwords, secrets, tokens and keys shown as "********", as
 * `bootfleetd --print-config` prints it.
 */
export const configRoutes: RouteModule = (deps) => [
  defineRoute({
    method: "GET",
    path: "/config",
    tag: "config",
    summary: "The effective configuration, secrets masked",
    roles: READERS,
    handler: () => {
      const config = deps.services.config;
      if (!config)
        throw new ApiError(503, "service_unavailable", "the configuration is not available");
      return config();
    },
  }),
];
