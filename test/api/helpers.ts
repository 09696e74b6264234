import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import { type AppDeps, createApi } from "../../src/api/app.js";
import { hashPassword } from "../../src/api/auth/password.js";
import { TokenService } from "../../src/api/auth/tokens.js";
import { Store } from "../../src/store/index.js";
import type { Role, User } from "../../src/store/users.js";

export const HIGH_LIMITS = {
  general: { limit: 1_000_000, windowSeconds: 60 },
  auth: { limit: 1_000_000, windowSeconds: 300 },
  refresh: { limit: 1_000_000, windowSeconds: 300 },
  upload: { limit: 1_000_000, windowSeconds: 60 },
};

/** A pino logger whose lines are kept, to check what was (not) logged. */
export function memoryLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { log: pino({ level: "trace" }, stream), lines };
}

export interface TestApi {
  app: ReturnType<typeof createApi>["app"];
  routes: ReturnType<typeof createApi>["routes"];
  store: Store;
  tokens: TokenService;
  key: Uint8Array;
  dir: string;
  logLines: string[];
  now: { ms: number };
  targetChanges: number[];
}

/** An app on a fresh database in a temp folder, removed at teardown. */
export function makeApi(
  t: { teardown: (fn: () => void) => void },
  over: Partial<AppDeps> = {},
): TestApi {
  const dir = mkdtempSync(join(tmpdir(), `bf-api-${process.pid}-`));
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  const { log, lines } = memoryLogger();
  const key = new Uint8Array(32).map((_, i) => (i * 37 + 11) & 0xff);
  const now = { ms: Date.now() };
  const clock = () => now.ms;
  const targetChanges: number[] = [];
  const { app, routes } = createApi({
    log,
    version: "test",
    state: () => "ready",
    store,
    signingKey: key,
    clock,
    rateLimits: HIGH_LIMITS,
    directories: { data: dir },
    onTargetChanged: (id) => targetChanges.push(id),
    iscsi: { portalIp: "10.99.0.1", portalPort: 3260 },
    // The daemon hands the API its effective configuration; a test app has this much.
    services: { config: () => ({ data_dir: dir, fleet: { stall_timeout_seconds: 120 } }) },
    ...over,
  });
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    app,
    routes,
    store,
    tokens: new TokenService(key, store, clock),
    key,
    dir,
    logLines: lines,
    now,
    targetChanges,
  };
}

export async function addUser(
  api: TestApi,
  username: string,
  role: Role,
  password = `${username}-pass-123`,
  extra: Partial<User> = {},
): Promise<User> {
  return api.store.users.create({
    username,
    role,
    password_hash: await hashPassword(password),
    ...extra,
  });
}

/** A token for a user without the scrypt cost of a login. */
export async function tokenFor(api: TestApi, user: User): Promise<string> {
  return (await api.tokens.issue(user, null)).access_token;
}

export async function call(
  api: TestApi,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; headers?: Record<string, string>; env?: unknown } = {},
) {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await api.app.request(
    path,
    {
      method,
      headers,
      body:
        opts.body === undefined
          ? undefined
          : typeof opts.body === "string"
            ? opts.body
            : JSON.stringify(opts.body),
    },
    opts.env,
  );
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary JSON answers
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** The JSON blocks of the GGnet document that follow a heading, in order. */
export function seedJsonAfter(doc: string, heading: string): unknown[] {
  const at = doc.indexOf(heading);
  if (at < 0) throw new Error(`heading not in the seed: ${heading}`);
  const next = doc.slice(at + heading.length).search(/\n#{2,4} /);
  const section = doc.slice(at, next < 0 ? undefined : at + heading.length + next);
  return [...section.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!));
}
