import { request } from "../api.ts";
import { Loading, Problem, Time, Title, useResource } from "../ui.tsx";

interface Operation {
  id: number;
  timestamp: string;
  resource_type: string;
  resource_id: string | null;
  operation: string;
  status: string;
  duration_ms: number | null;
  machine_id: number | null;
  user: string | null;
  details: { method?: string; path?: string; http_status?: number };
}

interface HistoryAnswer {
  operations: Operation[];
  total: number;
  limit: number;
  offset: number;
}

const FILTERS = [
  "resource_type",
  "operation",
  "status",
  "username",
  "machine_id",
  "since",
  "until",
];
const PAGE = 50;

/** The filters live in the address (#/history?status=failure), so a filtered view can be shared. */
export function HistoryPage({ query }: { query: URLSearchParams }) {
  const q = new URLSearchParams();
  for (const k of FILTERS) {
    const v = query.get(k);
    if (v) q.set(k, k === "since" || k === "until" ? new Date(v).toISOString() : v);
  }
  const offset = Number(query.get("offset") ?? 0) || 0;
  q.set("limit", String(PAGE));
  q.set("offset", String(offset));
  const key = q.toString();
  const history = useResource(() => request<HistoryAnswer>("GET", `/history?${key}`), [key]);

  const go = (params: URLSearchParams) => {
    location.hash = `#/history?${params}`;
  };
  const onSubmit = (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const p = new URLSearchParams();
    for (const k of FILTERS) {
      const v = String(f.get(k) ?? "").trim();
      if (v) p.set(k, v);
    }
    go(p);
  };
  const page = (delta: number) => {
    const p = new URLSearchParams(query);
    p.set("offset", String(Math.max(0, offset + delta)));
    go(p);
  };
  const h = history.data;
  return (
    <>
      <Title>History</Title>
      {/* Fields hold what the admin chose until Filter; keyed by the address, so a new
          address (Filter, a shared link) starts them from it. Controlled by the address
          instead, every re-render (the list arriving, a live event) put back its values over
          a choice not yet submitted. */}
      <form key={key} class="filters" onSubmit={onSubmit} aria-label="Filter the history">
        <label>
          Resource
          <select name="resource_type">
            <option value="">any</option>
            {["machine", "target", "session", "image", "user", "job", "auth", "storage"].map(
              (r) => (
                <option key={r} value={r} selected={query.get("resource_type") === r}>
                  {r}
                </option>
              ),
            )}
          </select>
        </label>
        <label>
          Operation
          <input
            name="operation"
            defaultValue={query.get("operation") ?? ""}
            placeholder="e.g. power_on"
          />
        </label>
        <label>
          Result
          <select name="status">
            <option value="">any</option>
            {["success", "failure"].map((r) => (
              <option key={r} value={r} selected={query.get("status") === r}>
                {r}
              </option>
            ))}
          </select>
        </label>
        <label>
          User
          <input name="username" defaultValue={query.get("username") ?? ""} />
        </label>
        <label>
          Machine id
          <input
            name="machine_id"
            inputMode="numeric"
            pattern="[0-9]*"
            defaultValue={query.get("machine_id") ?? ""}
          />
        </label>
        <label>
          From
          <input name="since" type="datetime-local" defaultValue={query.get("since") ?? ""} />
        </label>
        <label>
          Until
          <input name="until" type="datetime-local" defaultValue={query.get("until") ?? ""} />
        </label>
        <button type="submit">Filter</button>
      </form>
      <Problem error={history.error} what="History" />
      <Loading when={history.loading && !h} />
      {h ? (
        <>
          <table>
            <caption>
              {h.total} operation{h.total === 1 ? "" : "s"}
              {h.total > 0 ? `, ${offset + 1}–${offset + h.operations.length} shown` : ""}
            </caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">User</th>
                <th scope="col">Resource</th>
                <th scope="col">Operation</th>
                <th scope="col">Result</th>
                <th scope="col">Request</th>
                <th scope="col">Duration</th>
              </tr>
            </thead>
            <tbody>
              {h.operations.map((o) => (
                <tr key={o.id} class={o.status === "failure" ? "failed" : undefined}>
                  <td>
                    <Time at={o.timestamp} />
                  </td>
                  <td>{o.user ?? "–"}</td>
                  <td>
                    {o.resource_type}
                    {o.resource_id ? ` ${o.resource_id}` : ""}
                  </td>
                  <td>{o.operation}</td>
                  <td>
                    {o.status}
                    {o.details.http_status ? ` (${o.details.http_status})` : ""}
                  </td>
                  <td class="mono">
                    {o.details.method} {o.details.path}
                  </td>
                  <td class="num">{o.duration_ms === null ? "–" : `${o.duration_ms} ms`}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <nav class="pager" aria-label="Pages">
            <button type="button" disabled={offset === 0} onClick={() => page(-PAGE)}>
              Newer
            </button>
            <button
              type="button"
              disabled={offset + h.operations.length >= h.total}
              onClick={() => page(PAGE)}
            >
              Older
            </button>
          </nav>
        </>
      ) : null}
    </>
  );
}
