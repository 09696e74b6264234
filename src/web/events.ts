import { freshToken, refresh, user } from "./api.ts";

/** One event as /api/ws sends it (the GGnet types plus bootfleet's own). */
export interface LiveEvent {
  id: number;
  type: string;
  at: string;
  payload: Record<string, unknown>;
  dropped_before?: number;
}

export type LiveState = "connecting" | "live" | "offline";

type Listener = (e: LiveEvent) => void;

const listeners = new Set<Listener>();
const stateListeners = new Set<(s: LiveState) => void>();
let socket: WebSocket | undefined;
let state: LiveState = "offline";
let lastId = 0;
let retryTimer: ReturnType<typeof setTimeout> | undefined;
let failures = 0;
let wanted = false;
let opening = false;
/** The last alerts seen, for the alerts page when the server has no alert resource. */
export const recentAlerts: LiveEvent[] = [];

function setState(s: LiveState) {
  state = s;
  for (const fn of stateListeners) fn(s);
}

export function liveState(): LiveState {
  return state;
}

export function onLiveState(fn: (s: LiveState) => void): () => void {
  stateListeners.add(fn);
  return () => stateListeners.delete(fn);
}

/** Every event from now on; returns the unsubscribe function (for useEffect). */
export function onEvent(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * Opens the WebSocket (a browser cannot set its Authorization header, so the token goes
 * as ?token=, which the server keeps out of its logs). Reconnects with ?after=<last id>
 * so nothing is missed, with a fresh token when the server closed for an expired one.
 */
export async function connectLive(): Promise<void> {
  wanted = true;
  if (socket || opening) return;
  opening = true;
  let t: string | undefined;
  try {
    t = await freshToken();
  } finally {
    opening = false;
  }
  if (!t || !wanted || socket) return;
  setState("connecting");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ token: t });
  if (lastId > 0) q.set("after", String(lastId));
  const ws = new WebSocket(`${scheme}//${location.host}/api/ws?${q}`);
  socket = ws;
  let openedAt = 0;
  ws.onopen = () => {
    openedAt = Date.now();
    setState("live");
  };
  ws.onmessage = (m) => {
    if (socket !== ws) return; // a socket of an earlier login, still closing
    let e: LiveEvent;
    try {
      e = JSON.parse(String(m.data)) as LiveEvent;
    } catch {
      return;
    }
    if (typeof e.id === "number") lastId = Math.max(lastId, e.id);
    if (e.type === "system_alert") {
      recentAlerts.unshift(e);
      recentAlerts.length = Math.min(recentAlerts.length, 50);
    }
    for (const fn of listeners) fn(e);
  };
  ws.onclose = (ev) => {
    if (socket !== ws) return;
    socket = undefined;
    if (!wanted) {
      setState("offline");
      return;
    }
    setState("connecting");
    // A connection that lasted counts as a success; one closed at once (a token the
    // server refuses, a server in trouble) backs off, so a tab never spins.
    if (openedAt && Date.now() - openedAt > 60_000) failures = 0;
    failures++;
    // 4001 (token expired or revoked) or a refused upgrade: connectLive renews the token
    // first when it is due; a session that is gone logs the user out, which ends this.
    // Anything else: the server restarted, or this tab read too slowly.
    const delay = failures <= 1 ? 500 : Math.min(30_000, 1000 * 2 ** Math.min(failures, 5));
    retryTimer = setTimeout(async () => {
      // A refresh that is refused logs the user out, which ends the stream for good.
      if (ev.code === 4001) await refresh();
      if (user()) void connectLive();
      else setState("offline");
    }, delay);
  };
}

export function disconnectLive(): void {
  wanted = false;
  clearTimeout(retryTimer);
  socket?.close(1000, "logged out");
  socket = undefined;
  lastId = 0;
  failures = 0;
  setState("offline");
}
