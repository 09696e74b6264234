/**
 * The dashboard's side of the REST API: tokens, requests and errors.
 *
 * Tokens: the access token lives in this module's memory only; the refresh token in
 * sessionStorage (one tab, gone when the tab closes), so a reload logs back in with one
 * refresh. No cookie is ever set, so another site can make the browser send nothing that
 * authorizes a call (no CSRF to defend against): every call carries an Authorization
 * header that only this origin's script can write.
 */

export type Role = "admin" | "operator" | "viewer" | "client";

export interface User {
  id: number;
  username: string;
  email: string | null;
  full_name: string;
  role: Role;
  status: string;
  last_login: string | null;
}

interface TokenPair {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

/** An answer other than 2xx, with the contract's error body when there is one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(detail);
  }

  /** The server has no such route (an API piece not there yet): the page says so. */
  get unavailable(): boolean {
    return this.status === 404 && this.code === "not_found" && this.detail.startsWith("no route");
  }
}

const REFRESH_KEY = "bootfleet.refresh_token";

let accessToken: string | undefined;
/** When the access token expires (ms since the epoch, by this browser's clock). */
let accessExpiresAt = 0;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let refreshing: Promise<boolean> | undefined;
const sessionListeners = new Set<(user: User | undefined) => void>();
let currentUser: User | undefined;

export function user(): User | undefined {
  return currentUser;
}

/** Called with the user after login and with undefined after logout or a lost session. */
export function onSession(fn: (user: User | undefined) => void): () => void {
  sessionListeners.add(fn);
  return () => sessionListeners.delete(fn);
}

function setUser(u: User | undefined) {
  currentUser = u;
  for (const fn of sessionListeners) fn(u);
}

export function token(): string | undefined {
  return accessToken;
}

/**
 * The access token, renewed first when it has expired or is about to (a laptop that slept
 * through the renewal timer): for the event stream, which cannot retry on a 401 itself.
 */
export async function freshToken(): Promise<string | undefined> {
  if (accessToken && Date.now() > accessExpiresAt - 15_000) await refresh();
  return accessToken;
}

function keep(pair: TokenPair) {
  accessToken = pair.access_token;
  accessExpiresAt = Date.now() + pair.expires_in * 1000;
  try {
    sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
  } catch {
    // storage disabled: the login lasts as long as the page
  }
  clearTimeout(refreshTimer);
  // Renewed ahead of expiry, so open streams and requests never meet an expired token.
  const ms = Math.max(30, pair.expires_in * 0.8) * 1000;
  refreshTimer = setTimeout(() => void refresh(), ms);
}

function forget() {
  accessToken = undefined;
  clearTimeout(refreshTimer);
  try {
    sessionStorage.removeItem(REFRESH_KEY);
  } catch {
    // nothing stored
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  let code = "http_error";
  let detail = `${res.status} ${res.statusText}`;
  try {
    const body = (await res.json()) as { error?: string; detail?: string };
    if (body.error) code = body.error;
    if (body.detail) detail = body.detail;
  } catch {
    // not JSON
  }
  return new ApiError(res.status, code, detail);
}

async function post<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(`/api${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw await errorOf(res);
  return (await res.json()) as T;
}

export async function login(username: string, password: string): Promise<User> {
  keep(await post<TokenPair>("/auth/login", { username, password }));
  const me = await request<User>("GET", "/auth/me");
  setUser(me);
  return me;
}

/**
 * Exchanges the stored refresh token for a new pair (the old one stops working, so two
 * calls at once would revoke the session: they share one request). False when the
 * session is gone.
 */
export function refresh(): Promise<boolean> {
  refreshing ??= (async () => {
    let stored: string | null = null;
    try {
      stored = sessionStorage.getItem(REFRESH_KEY);
    } catch {
      // no storage
    }
    if (!stored) return false;
    try {
      keep(await post<TokenPair>("/auth/refresh", { refresh_token: stored }));
      return true;
    } catch (err) {
      // A refused token ends the session; a network error or a rate limit leaves it to retry.
      if (err instanceof ApiError && err.status === 401) {
        forget();
        setUser(undefined);
      }
      return false;
    }
  })().finally(() => {
    refreshing = undefined;
  });
  return refreshing;
}

/** On page load: back into the session of this tab, if it has one. */
export async function resume(): Promise<User | undefined> {
  if (!(await refresh())) return undefined;
  const me = await request<User>("GET", "/auth/me");
  setUser(me);
  return me;
}

export async function logout(): Promise<void> {
  try {
    if (accessToken) await request("POST", "/auth/logout");
  } finally {
    forget();
    setUser(undefined);
  }
}

/** Total of a list (X-Total-Count), set by `list`. */
export interface Page<T> {
  items: T[];
  total: number;
}

/**
 * One API call with the access token; a 401 is answered once by a refresh and a retry.
 * Bodies: a FormData goes as multipart, anything else as JSON.
 */
export async function request<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  const res = await send(method, path, body);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export async function list<T>(path: string): Promise<Page<T>> {
  const res = await send("GET", path);
  const items = (await res.json()) as T[];
  return { items, total: Number(res.headers.get("x-total-count") ?? items.length) };
}

async function send(method: string, path: string, body?: unknown, retried = false) {
  const headers: Record<string, string> = { accept: "application/json" };
  if (accessToken) headers.authorization = `Bearer ${accessToken}`;
  let payload: BodyInit | undefined;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(`/api${path}`, { method, headers, body: payload ?? null });
  if (res.status === 401 && !retried && currentUser && (await refresh())) {
    return send(method, path, body, true);
  }
  if (res.status === 401 && currentUser) {
    forget();
    setUser(undefined);
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}
