import type { Db } from "./db.js";
import type { ListPage, ListQuery } from "./list.js";
import { Table } from "./table.js";

export type Role = "admin" | "operator" | "viewer" | "client";
export const ROLES: readonly Role[] = ["admin", "operator", "viewer", "client"];

export interface User {
  id: number;
  username: string;
  email: string | null;
  full_name: string;
  role: Role;
  status: "active" | "disabled";
  password_hash: string;
  created_at: string;
  updated_at: string;
  last_login: string | null;
}

const WRITABLE = [
  "username",
  "email",
  "full_name",
  "role",
  "status",
  "password_hash",
  "last_login",
] as const satisfies readonly (keyof User)[];

export const USER_SORTS = ["id", "username", "email", "role", "created_at", "last_login"] as const;

export interface UserFilter {
  role?: Role | undefined;
  status?: User["status"] | undefined;
}

/** An account's run of failed logins (login back-off). */
export interface LoginFailures {
  failed_logins: number;
  /** ISO time until which logins are refused, or null. */
  login_locked_until: string | null;
}

export class UsersRepo extends Table<User> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "users", WRITABLE, clock);
  }

  loginFailures(id: number): LoginFailures {
    const row = this.stmt("SELECT failed_logins, login_locked_until FROM users WHERE id = @id").get(
      {
        id,
      },
    ) as LoginFailures | undefined;
    return row ?? { failed_logins: 0, login_locked_until: null };
  }

  /** Stores the account's failure count and lock (null: not locked). */
  setLoginFailures(id: number, failures: number, lockedUntil: string | null): void {
    this.stmt(
      "UPDATE users SET failed_logins = @n, login_locked_until = @until WHERE id = @id",
    ).run({ id, n: failures, until: lockedUntil });
  }

  create(u: Pick<User, "username" | "role" | "password_hash"> & Partial<User>): User {
    return this.insert(u);
  }

  listRows(q: ListQuery, f: UserFilter = {}): ListPage<User> {
    return this.page<User>(
      {
        select: "*",
        from: "users",
        where: [f.role && "role = @role", f.status && "status = @status"],
        params: { role: f.role, status: f.status },
        search: ["username", "email", "full_name"],
        sort: Object.fromEntries(USER_SORTS.map((k) => [k, k])),
        tiebreak: "id",
      },
      q,
    );
  }

  /** Admins, all of them or only the active ones other than one user (the last-admin rule). */
  countAdmins(opts: { activeExcept?: number } = {}): number {
    return opts.activeExcept === undefined
      ? this.count("role = 'admin'")
      : this.count("role = 'admin' AND status = 'active' AND id != @id", { id: opts.activeExcept });
  }

  /** By username or by email (clients of Gough and Midgard log in with an email). */
  findByLogin(login: string): User | undefined {
    return this.db
      .prepare("SELECT * FROM users WHERE username = @l OR email = @l ORDER BY id LIMIT 1")
      .get({ l: login }) as User | undefined;
  }
}
