import * as z from "zod";
import { type Role, USER_SORTS, type User } from "../../store/users.js";
import { retireInitialPassword } from "../auth/initial-admin.js";
import { hashPassword, randomPassword } from "../auth/password.js";
import { conflictOnUnique, notFound, uniqueColumn } from "../conflict.js";
import { ApiError } from "../errors.js";
import {
  ADMIN_ONLY,
  type ApiDeps,
  defineRoute,
  idParams,
  listQuery,
  ROLES,
  type RouteModule,
  sendList,
} from "../route.js";
import { zEmail, zLabel, zPassword, zUsername } from "../validate.js";

/** What the API shows of a user (never the password hash). */
export function userView(u: User) {
  return {
    id: u.id,
    username: u.username,
    email: u.email,
    full_name: u.full_name,
    role: u.role,
    status: u.status,
    is_active: u.status === "active",
    created_at: u.created_at,
    updated_at: u.updated_at,
    last_login: u.last_login,
  };
}

const roleEnum = z.enum(ROLES as [Role, ...Role[]]);
const statusEnum = z.enum(["active", "disabled"]);

const createBody = z
  .object({
    username: zUsername,
    email: zEmail.nullable().optional(),
    full_name: zLabel(128).optional(),
    /** Gough's spelling of full_name. */
    name: zLabel(128).optional(),
    password: zPassword,
    role: roleEnum,
    status: statusEnum.optional(),
    is_active: z.boolean().optional(),
  })
  .strict();

const updateBody = z
  .object({
    email: zEmail.nullable().optional(),
    full_name: zLabel(128).optional(),
    name: zLabel(128).optional(),
    password: zPassword.optional(),
    role: roleEnum.optional(),
    status: statusEnum.optional(),
    is_active: z.boolean().optional(),
  })
  .strict();

const resetBody = z.object({ password: zPassword.optional() }).strict().optional();

const conflictDetail = (err: Error) =>
  uniqueColumn(err) === "email"
    ? "a user with this email exists"
    : "a user with this username exists";

function statusOf(b: {
  status?: "active" | "disabled" | undefined;
  is_active?: boolean | undefined;
}) {
  return b.status ?? (b.is_active === undefined ? undefined : b.is_active ? "active" : "disabled");
}

/** Admin-only user management, with the guard that the last active admin stays. */
export const usersRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const afterChange = async () => {
    if (deps.initialPasswordFile) {
      await retireInitialPassword(store, deps.initialPasswordFile, deps.log);
    }
  };
  const activeAdminsExcept = (id: number) => store.users.countAdmins({ activeExcept: id });
  const load = (id: number) => store.users.get(id) ?? raise(notFound("user", id));

  return [
    defineRoute({
      method: "GET",
      path: "/users",
      tag: "users",
      summary: "List users",
      roles: ADMIN_ONLY,
      query: listQuery(
        { sort: USER_SORTS },
        { role: roleEnum.optional(), status: statusEnum.optional() },
      ),
      handler: ({ c, query }) => {
        const { rows, total } = store.users.listRows(query, {
          role: query.role,
          status: query.status,
        });
        return sendList(c, rows.map(userView), total, query);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/users",
      tag: "users",
      summary: "Create a user",
      roles: ADMIN_ONLY,
      resource: "user",
      status: 201,
      body: createBody,
      handler: async ({ body }) => {
        const password_hash = await hashPassword(body.password);
        const user = conflictOnUnique(
          () =>
            store.users.create({
              username: body.username,
              email: body.email ?? null,
              full_name: body.full_name ?? body.name ?? "",
              role: body.role as User["role"],
              status: statusOf(body) ?? "active",
              password_hash,
            }),
          conflictDetail,
        );
        await afterChange();
        return userView(user);
      },
    }),
    defineRoute({
      method: "GET",
      path: "/users/:id",
      tag: "users",
      summary: "Get a user",
      roles: ADMIN_ONLY,
      params: idParams,
      handler: ({ params }) => userView(load(params.id)),
    }),
    defineRoute({
      method: "PUT",
      path: "/users/:id",
      tag: "users",
      summary: "Update a user (a role, status or password change ends the user's logins)",
      roles: ADMIN_ONLY,
      resource: "user",
      params: idParams,
      body: updateBody,
      handler: async ({ params, body }) => {
        const before = load(params.id);
        const status = statusOf(body);
        const role = body.role as User["role"] | undefined;
        const losesAdmin =
          before.role === "admin" &&
          before.status === "active" &&
          ((role !== undefined && role !== "admin") || status === "disabled");
        if (losesAdmin && activeAdminsExcept(before.id) === 0) {
          throw new ApiError(
            409,
            "conflict_error",
            "the last active admin cannot be demoted or disabled",
          );
        }
        const password_hash = body.password ? await hashPassword(body.password) : undefined;
        const after = conflictOnUnique(
          () =>
            store.transaction(() => {
              const u = store.users.update(before.id, {
                email: body.email,
                full_name: body.full_name ?? body.name,
                role,
                status,
                password_hash,
              })!;
              if (
                password_hash ||
                (role && role !== before.role) ||
                (status && status !== before.status)
              ) {
                store.authSessions.revokeAllOf(before.id, "account changed");
              }
              return u;
            }),
          conflictDetail,
        );
        await afterChange();
        return userView(after);
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/users/:id",
      tag: "users",
      summary: "Delete a user",
      roles: ADMIN_ONLY,
      resource: "user",
      params: idParams,
      handler: async ({ params, user }) => {
        const target = load(params.id);
        if (target.id === user!.id) {
          throw new ApiError(409, "conflict_error", "you cannot delete your own account");
        }
        if (
          target.role === "admin" &&
          target.status === "active" &&
          activeAdminsExcept(target.id) === 0
        ) {
          throw new ApiError(409, "conflict_error", "the last active admin cannot be deleted");
        }
        store.users.delete(target.id);
        await afterChange();
        return { message: "user deleted", id: target.id };
      },
    }),
    defineRoute({
      method: "POST",
      path: "/users/:id/reset-password",
      tag: "users",
      summary:
        "Set a user's password (body {password}), or without a body generate one, returned once; ends the user's logins",
      roles: ADMIN_ONLY,
      resource: "user",
      operation: "reset-password",
      params: idParams,
      body: resetBody,
      handler: async ({ params, body }) => {
        const target = load(params.id);
        const generated = body?.password === undefined ? randomPassword() : undefined;
        const hash = await hashPassword(body?.password ?? generated!);
        store.transaction(() => {
          store.users.update(target.id, { password_hash: hash });
          store.authSessions.revokeAllOf(target.id, "password reset");
        });
        await afterChange();
        return {
          id: target.id,
          message: "password reset",
          ...(generated ? { temporary_password: generated } : {}),
        };
      },
    }),
  ];
};

function raise(err: Error): never {
  throw err;
}

export type { ApiDeps };
