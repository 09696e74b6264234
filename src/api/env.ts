import type { AuthUser } from "./route.js";

/** The Hono environment of the API: what middleware leaves for the handlers. */
export type ApiEnv = {
  Variables: {
    requestId: string;
    /** Set by the route wrapper once a bearer token was verified. */
    user?: AuthUser;
  };
};
