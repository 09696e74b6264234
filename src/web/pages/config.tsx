import { request } from "../api.ts";
import { Loading, Problem, Section, Title, useResource } from "../ui.tsx";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface HealthDetailed {
  status: string;
  version: string;
  checks: Record<string, Json>;
}

/**
 * The effective configuration, read-only (GET /api/config: secrets come masked from the
 * server; nothing here unmasks them), and the daemon's own health checks.
 */
export function ConfigPage() {
  const config = useResource(() => request<Record<string, Json>>("GET", "/config"), []);
  const health = useResource(() => request<HealthDetailed>("GET", "/health/detailed"), []);
  const values = (config.data && "config" in config.data ? config.data.config : config.data) as
    | Record<string, Json>
    | undefined;
  const sources = (config.data && "sources" in config.data ? config.data.sources : undefined) as
    | Record<string, Json>
    | undefined;
  return (
    <>
      <Title>Configuration</Title>
      <Section title="Effective configuration">
        <p class="muted">Read-only. Change /etc/bootfleet/bootfleetd.toml and reload the daemon.</p>
        <Problem error={config.error} what="Configuration" />
        <Loading when={config.loading && !config.data} />
        {values ? <ConfigTable values={values} sources={sources} /> : null}
      </Section>
      <Section title="Health">
        <Problem error={health.error} what="Health" />
        {health.data ? (
          <>
            <p>
              bootfleet {health.data.version}: <strong>{health.data.status}</strong>
            </p>
            {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling region must be reachable by keyboard (WCAG 2.1.1) */}
            <pre class="json" tabIndex={0}>
              {JSON.stringify(health.data.checks, null, 2)}
            </pre>
          </>
        ) : null}
      </Section>
    </>
  );
}

function flatten(prefix: string, v: Json, out: [string, Json][]) {
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(prefix ? `${prefix}.${k}` : k, x, out);
  } else out.push([prefix, v]);
}

function ConfigTable({
  values,
  sources,
}: {
  values: Record<string, Json>;
  sources: Record<string, Json> | undefined;
}) {
  const rows: [string, Json][] = [];
  flatten("", values, rows);
  return (
    <table>
      <caption>{rows.length} settings</caption>
      <thead>
        <tr>
          <th scope="col">Key</th>
          <th scope="col">Value</th>
          {sources ? <th scope="col">From</th> : null}
        </tr>
      </thead>
      <tbody>
        {rows.map(([k, v]) => (
          <tr key={k}>
            <td class="mono">{k}</td>
            <td class="mono">{typeof v === "string" ? v : JSON.stringify(v)}</td>
            {sources ? <td>{String(sources[k] ?? "default")}</td> : null}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
