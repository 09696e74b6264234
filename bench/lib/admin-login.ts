// A freshly started daemon's admin session, for the benches that measure its API: the first
// start writes the admin's password to <data_dir>/initial-admin-password (not to its log).

import { readFileSync } from "node:fs";
import { join } from "node:path";

/** Logs in as admin with the first start's password; returns the access token. */
export async function adminAccessToken(base: string, dataDir: string): Promise<string> {
  const password = readFileSync(join(dataDir, "initial-admin-password"), "utf8").trim();
  const login = await fetch(`${base}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "admin", password }),
  });
  if (!login.ok) throw new Error(`login: ${login.status} ${await login.text()}`);
  const { access_token } = (await login.json()) as { access_token: string };
  return access_token;
}
