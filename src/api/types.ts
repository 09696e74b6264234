/**
 * The API's shared vocabulary, a leaf: the caller, the Hono environment and the daemon's
 * lifecycle state. Everything in src/api may import it; it imports nothing of src/api, so
 * the route kit, the token service and the routes never need one another for a type.
 */
import type { Role } from "../store/users.js";

/** The authenticated caller, as the handler sees it. */
export interface AuthUser {
  id: number;
  username: string;
  role: Role;
  /** The login session (refresh-token family) the access token belongs to. */
  sessionId: string;
}

/** The Hono environment of the API: what middleware leaves for the handlers. */
export type ApiEnv = {
  Variables: {
    requestId: string;
    /** Set by the route wrapper once a bearer token was verified. */
    user?: AuthUser;
  };
};

/** The daemon's lifecycle: /api/health answers 503 unless "ready". */
export type DaemonState = "starting" | "ready" | "stopping";
