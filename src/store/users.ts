import type { Db } from "./db.js";
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

export class UsersRepo extends Table<User> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "users", WRITABLE, clock);
  }

  create(u: Pick<User, "username" | "role" | "password_hash"> & Partial<User>): User {
    return this.insert(u);
  }

  /** By username or by email (clients of Gough and Midgard log in with an email). */
  findByLogin(login: string): User | undefined {
    return this.db
      .prepare("SELECT * FROM users WHERE username = @l OR email = @l ORDER BY id LIMIT 1")
      .get({ l: login }) as User | undefined;
  }
}
