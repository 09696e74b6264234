import type { RouteModule } from "./route.js";
import { healthRoutes } from "./routes/health.js";

/**
 * Every route module of the API, one per line. Append a line to add a module: the
 * route × role matrix test, /api/openapi.json and /api/docs pick it up by themselves.
 */
export const ROUTE_MODULES: readonly RouteModule[] = [healthRoutes];
