import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError, type Role, user } from "./api.ts";
import { type LiveEvent, onEvent } from "./events.ts";

/** What the signed-in role may do; buttons a role may not use are not rendered at all. */
export function can(action: "operate" | "admin" | "power"): boolean {
  const role: Role | undefined = user()?.role;
  if (action === "admin") return role === "admin";
  if (action === "operate") return role === "admin" || role === "operator";
  // a client may switch its own machines (the API only shows it those)
  return role === "admin" || role === "operator" || role === "client";
}

export interface Resource<T> {
  data: T | undefined;
  error: ApiError | Error | undefined;
  loading: boolean;
  reload: () => void;
}

/** Loads once and on every change of `deps`; `reload` loads again, keeping the old data shown. */
export function useResource<T>(load: () => Promise<T>, deps: unknown[]): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<ApiError | Error | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const seq = useRef(0);
  useEffect(() => {
    const mine = ++seq.current;
    setLoading(true);
    load().then(
      (d) => {
        if (mine !== seq.current) return;
        setData(d);
        setError(undefined);
        setLoading(false);
      },
      (err: unknown) => {
        if (mine !== seq.current) return;
        setError(err instanceof Error ? err : new Error(String(err)));
        setLoading(false);
      },
    );
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  return { data, error, loading, reload };
}

/** Live events, for as long as the component is shown. */
export function useLive(fn: (e: LiveEvent) => void): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => onEvent((e) => ref.current(e)), []);
}

/**
 * Calls `fn` at most once per `ms` however many times `trigger` is called: a room of PCs
 * booting at once sends dozens of events, and the API allows 100 requests a minute.
 */
export function useThrottle(fn: () => void, ms: number): () => void {
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => () => clearTimeout(timer.current), []);
  return useCallback(() => {
    if (timer.current !== undefined) return;
    timer.current = setTimeout(() => {
      timer.current = undefined;
      ref.current();
    }, ms);
  }, [ms]);
}

/** Runs `fn` every `ms` while the component is shown and the tab is visible. */
export function useInterval(fn: () => void, ms: number): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    const id = setInterval(() => {
      if (document.visibilityState === "visible") ref.current();
    }, ms);
    return () => clearInterval(id);
  }, [ms]);
}

/** The note a page shows for a failed load: missing feature, forbidden, or the error. */
export function Problem({ error, what }: { error: Error | undefined; what: string }) {
  if (!error) return null;
  if (error instanceof ApiError && error.unavailable) {
    return (
      <p class="note unavailable">
        {what}: not available on this server (its API has no such endpoint yet).
      </p>
    );
  }
  if (error instanceof ApiError && error.status === 403) {
    return <p class="note">{what}: your role cannot see this.</p>;
  }
  return (
    <p class="note error" role="alert">
      {what}: {error.message}
    </p>
  );
}

export function Loading({ when }: { when: boolean }) {
  return when ? (
    <p class="muted" aria-live="polite">
      Loading…
    </p>
  ) : null;
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function Time({ at }: { at: string | null | undefined }) {
  if (!at) return <span class="muted">–</span>;
  const d = new Date(at);
  return (
    <time dateTime={d.toISOString()} title={d.toISOString()}>
      {d.toLocaleString()}
    </time>
  );
}

/** A usage gauge: a <meter> (no inline style, so the CSP holds) with its figure in words. */
export function Gauge(props: { label: string; percent: number; detail?: string; id: string }) {
  const p = Math.max(0, Math.min(100, props.percent));
  return (
    <div class="gauge">
      <label for={props.id}>{props.label}</label>
      <meter id={props.id} min={0} max={100} low={75} high={90} optimum={0} value={p}>
        {p.toFixed(0)}%
      </meter>
      <span>
        {p.toFixed(1)}% used{props.detail ? ` · ${props.detail}` : ""}
      </span>
    </div>
  );
}

export function Section(props: { title: string; children: ComponentChildren; id?: string }) {
  const id = props.id ?? `s-${props.title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return (
    <section aria-labelledby={id}>
      <h2 id={id}>{props.title}</h2>
      {props.children}
    </section>
  );
}

/** A button that runs an async action and shows its outcome next to it. */
export function ActionButton(props: {
  label: string;
  run: () => Promise<string | undefined>;
  confirm?: string;
  class?: string;
}) {
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | undefined>(undefined);
  const onClick = async () => {
    if (props.confirm && !window.confirm(props.confirm)) return;
    setBusy(true);
    setMsg(undefined);
    try {
      const text = await props.run();
      setMsg(text ? { ok: true, text } : undefined);
    } catch (err) {
      setMsg({ ok: false, text: actionErrorText(err) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button type="button" class={props.class} disabled={busy} onClick={onClick}>
        {props.label}
      </button>
      {msg ? (
        <span class={msg.ok ? "ok" : "error"} role="status">
          {msg.text}
        </span>
      ) : null}
    </span>
  );
}

/** A page's heading: focusable, so the app can move focus to it on navigation. */
export function Title({ children }: { children: ComponentChildren }) {
  return <h1 tabIndex={-1}>{children}</h1>;
}

/** What a failed action shows: the API's own words, or that this server lacks the route. */
export function actionErrorText(err: unknown): string {
  return err instanceof ApiError && err.unavailable
    ? "not available on this server"
    : (err as Error).message;
}
