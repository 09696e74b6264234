import { refresh, token } from "./api";

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
export function connectLive(): void {
  wanted = true;
  if (socket) return;
  const t = token();
  if (!t) return;
  setState("connecting");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ token: t });
  if (lastId > 0) q.set("after", String(lastId));
  const ws = new WebSocket(`${scheme}//${location.host}/api/ws?${q}`);
  socket = ws;
  ws.onopen = () => {
    failures = 0;
    setState("live");
  };
  ws.onmessage = (m) => {
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
    socket = undefined;
    if (!wanted) {
      setState("offline");
      return;
    }
    setState("connecting");
    failures++;
    // 4001: token expired or revoked. Anything else: the server restarted or we were slow.
    const delay = Math.min(30_000, 1000 * 2 ** Math.min(failures, 5));
    retryTimer = setTimeout(async () => {
      if (ev.code === 4001 && !(await refresh())) {
        setState("offline");
        return;
      }
      connectLive();
    }, delay);
  };
}

export function disconnectLive(): void {
  wanted = false;
  clearTimeout(retryTimer);
  socket?.close(1000, "logged out");
  socket = undefined;
  lastId = 0;
  setState("offline");
}
