import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import type { Logger } from "pino";
import type { Store } from "../../store/index.js";
import { hashPassword, randomPassword, verifyPassword } from "./password.js";

export const INITIAL_ADMIN_USERNAME = "admin";
export const INITIAL_PASSWORD_FILE = "initial-admin-password";

/**
 * No default account: when the database has no user at all, the daemon creates `admin`
 * with a random password and writes it, alone, to `<data_dir>/initial-admin-password`
 * (0600, created exclusively). Only the file's path is logged.
 *
 * The file is valid only while all of this holds: user `admin` still exists, is active,
 * is the only admin, and the password in the file is still its password. It is deleted
 * as soon as one of them stops holding — the admin changed the password (PUT
 * /api/users/{id} or reset-password), another admin was created (API or `bootfleet user
 * add`), the user was deleted, disabled or demoted — checked after every change to
 * users and at every daemon start (once the daemon serves: `createInitialAdmin`).
 */
export async function ensureInitialAdmin(store: Store, file: string, log: Logger): Promise<void> {
  if (!(await createInitialAdmin(store, file, log))) await retireInitialPassword(store, file, log);
}

/**
 * The first half of `ensureInitialAdmin`: creates `admin` and its file when the database has
 * no user; false (nothing done) when it has one. The daemon awaits only this before it
 * serves; the second half, `retireInitialPassword`, costs a scrypt (~0.4 s of CPU) and
 * nothing needs its answer to serve a request, so the daemon runs it once it is ready.
 */
export async function createInitialAdmin(
  store: Store,
  file: string,
  log: Logger,
): Promise<boolean> {
  if (store.users.count() > 0) return false;
  const password = randomPassword();
  const hash = await hashPassword(password);
  // Created before the file: if the file cannot be written the transaction is undone,
  // so a restart tries again instead of leaving an admin nobody knows the password of.
  let created = false;
  store.transaction(() => {
    if (store.users.count() > 0) return;
    store.users.create({
      username: INITIAL_ADMIN_USERNAME,
      role: "admin",
      password_hash: hash,
      full_name: "Administrator",
    });
    try {
      unlinkSync(file);
    } catch {
      // none left over
    }
    const fd = openSync(file, "wx", 0o600);
    try {
      writeSync(fd, `${password}\n`);
    } finally {
      closeSync(fd);
    }
    created = true;
  });
  if (!created) return false;
  log.warn(
    { path: file, username: INITIAL_ADMIN_USERNAME },
    "no user yet: created user admin with a one-time password, readable by root in this file; log in and change it (the file is deleted then)",
  );
  return true;
}

/** Deletes the one-time password file once it no longer opens the only admin account. */
export async function retireInitialPassword(
  store: Store,
  file: string,
  log: Logger,
): Promise<boolean> {
  let password: string;
  try {
    password = readFileSync(file, "utf8").trim();
  } catch {
    return false;
  }
  const admin = store.users.findByLogin(INITIAL_ADMIN_USERNAME);
  const admins = store.users.countAdmins();
  const stillValid =
    admin !== undefined &&
    admin.role === "admin" &&
    admin.status === "active" &&
    admins === 1 &&
    (await verifyPassword(password, admin.password_hash));
  if (stillValid) return false;
  try {
    unlinkSync(file);
  } catch {
    return false;
  }
  log.info({ path: file }, "one-time admin password file deleted: it is no longer needed");
  return true;
}
