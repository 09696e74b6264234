import type { Context } from "hono";
import * as z from "zod";
import { LoginBackoff } from "../auth/login-backoff.js";
import { burnPasswordCheck, verifyPassword } from "../auth/password.js";
import { ApiError } from "../errors.js";
import { clientAddress } from "../mount.js";
import { ANY_USER, defineRoute, type RouteModule } from "../route.js";
import { userView } from "./users.js";

const loginBody = z
  .object({
    username: z.string().min(1).max(254).optional(),
    email: z.string().min(1).max(254).optional(),
    password: z.string().min(1).max(1024),
  })
  .strict()
  .refine((b) => b.username !== undefined || b.email !== undefined, {
    message: "username or email is required",
    path: ["username"],
  });

const refreshBody = z.object({ refresh_token: z.string().min(1).max(4096) }).strict();

function badCredentials() {
  return new ApiError(401, "authentication_error", "invalid username or password");
}

/**
 * What history says of a login name that matches no account: people type their password
 * into the name field, so the name itself is never stored.
 */
export const UNKNOWN_LOGIN = "unknown user";

/** Login, refresh (rotating), logout and the caller's own account. */
export const authRoutes: RouteModule = (deps) => {
  const backoff = new LoginBackoff(deps.store, deps.clock);
  return [
    defineRoute({
      method: "POST",
      path: "/auth/login",
      tag: "auth",
      summary: "Log in with username (or email) and password; returns access and refresh tokens",
      roles: "public",
      rateLimit: "auth",
      resource: "auth",
      operation: "login",
      body: loginBody,
      handler: async ({ c, body, audit }) => {
        const login = body.username ?? body.email ?? "";
        const user = deps.store.users.findByLogin(login);
        audit(user ? { username: user.username, user_id: user.id } : { username: UNKNOWN_LOGIN });
        if (user) {
          const lockedMs = backoff.lockedFor(user.id);
          if (lockedMs > 0) throw accountLocked(c, lockedMs);
        }
        // The same scrypt work for an unknown user as for a known one.
        const ok = user
          ? await verifyPassword(body.password, user.password_hash)
          : await burnPasswordCheck(body.password);
        if (!user) throw badCredentials();
        if (!ok) {
          backoff.failed(user.id);
          throw badCredentials();
        }
        backoff.succeeded(user.id);
        if (user.status !== "active") {
          throw new ApiError(401, "authentication_error", "this account is disabled");
        }
        audit({ user_id: user.id, username: user.username, resource_id: user.id });
        deps.store.users.update(user.id, { last_login: new Date(deps.clock()).toISOString() });
        return deps.tokens.issue(user, clientAddress(c));
      },
    }),
    defineRoute({
      method: "POST",
      path: "/auth/refresh",
      tag: "auth",
      summary: "Exchange a refresh token for a new pair (the old refresh token stops working)",
      roles: "public",
      // Counted apart from logins: a busy UI refreshing must not lock out a login.
      rateLimit: "refresh",
      resource: "auth",
      operation: "refresh",
      body: refreshBody,
      handler: ({ body }) => deps.tokens.refresh(body.refresh_token),
    }),
    defineRoute({
      method: "POST",
      path: "/auth/logout",
      tag: "auth",
      summary: "Log out: the session's access and refresh tokens stop working",
      roles: ANY_USER,
      resource: "auth",
      operation: "logout",
      handler: ({ user }) => {
        deps.tokens.logout(user!.sessionId);
        return { message: "logged out" };
      },
    }),
    defineRoute({
      method: "GET",
      path: "/auth/me",
      tag: "auth",
      summary: "The current user",
      roles: ANY_USER,
      handler: ({ user }) => userView(deps.store.users.get(user!.id)!),
    }),
  ];
};

function accountLocked(c: Context, lockedMs: number): ApiError {
  const retry = Math.max(1, Math.ceil(lockedMs / 1000));
  c.header("Retry-After", String(retry));
  return new ApiError(
    429,
    "rate_limit_exceeded",
    `too many failed logins for this account: logins are refused for ${retry} s more`,
    { retry_after: retry },
  );
}
