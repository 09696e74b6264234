import type { RouteModule } from "./route.js";
import { alertsRoutes } from "./routes/alerts.js";
import { authRoutes } from "./routes/auth.js";
import { configRoutes } from "./routes/config.js";
import { eventsRoutes } from "./routes/events.js";
import { healthRoutes } from "./routes/health.js";
import { historyRoutes } from "./routes/history.js";
import { imageBuildsRoutes } from "./routes/image-builds.js";
import { imageVersionsRoutes } from "./routes/image-versions.js";
import { imagesRoutes } from "./routes/images.js";
import { jobsRoutes } from "./routes/jobs.js";
import { locationsRoutes } from "./routes/locations.js";
import { machinesRoutes } from "./routes/machines.js";
import { machinesBulkRoutes } from "./routes/machines-bulk.js";
import { powerRoutes } from "./routes/power.js";
import { sessionsRoutes } from "./routes/sessions.js";
import { storageRoutes } from "./routes/storage.js";
import { targetWritebackRoutes } from "./routes/target-writeback.js";
import { targetsRoutes } from "./routes/targets.js";
import { usersRoutes } from "./routes/users.js";

/**
 * Every route module of the API, one per line. Append a line to add a module: the
 * route × role matrix test, /api/openapi.json and /api/docs pick it up by themselves.
 */
export const ROUTE_MODULES: readonly RouteModule[] = [
  healthRoutes,
  authRoutes,
  usersRoutes,
  machinesRoutes,
  targetsRoutes,
  sessionsRoutes,
  historyRoutes,
  // Before imagesRoutes: /images/recipes is not an /images/:id.
  imageBuildsRoutes,
  imagesRoutes,
  jobsRoutes,
  eventsRoutes,
  powerRoutes,
  storageRoutes,
  alertsRoutes,
  locationsRoutes,
  configRoutes,
  machinesBulkRoutes,
  imageVersionsRoutes,
  targetWritebackRoutes,
];
