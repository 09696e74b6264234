import { useState } from "preact/hooks";
import { ApiError, list, request } from "../api.ts";
import { type LiveEvent, recentAlerts } from "../events.ts";
import { href } from "../router.ts";
import type { Alert } from "../types.ts";
import {
  ActionButton,
  can,
  Loading,
  Problem,
  Section,
  Time,
  Title,
  useLive,
  useResource,
  useThrottle,
} from "../ui.tsx";

/**
 * GET /api/alerts (stalls, target errors, disk reserve, overlay usage, failed jobs) with
 * acknowledge. On a server without the resource, the system_alert events this page has
 * seen are listed instead.
 */
export function AlertsPage() {
  const [showAll, setShowAll] = useState(false);
  const alerts = useResource(
    () => list<Alert>(`/alerts?limit=200${showAll ? "" : "&acknowledged=false"}`),
    [showAll],
  );
  const [seen, setSeen] = useState<LiveEvent[]>([...recentAlerts]);
  const reread = useThrottle(alerts.reload, 1000);
  useLive((e) => {
    if (e.type !== "system_alert" && !e.type.startsWith("alert")) return;
    setSeen([...recentAlerts]);
    reread();
  });
  const unavailable = alerts.error instanceof ApiError && alerts.error.unavailable;
  return (
    <>
      <Title>Alerts</Title>
      <Problem error={alerts.error} what="Alerts" />
      <Loading when={alerts.loading && !alerts.data} />
      {!unavailable ? (
        <label class="inline">
          <input
            type="checkbox"
            checked={showAll}
            onChange={(e) => setShowAll((e.currentTarget as HTMLInputElement).checked)}
          />{" "}
          Show acknowledged alerts too
        </label>
      ) : null}
      {alerts.data && alerts.data.items.length === 0 ? <p>No open alerts.</p> : null}
      {alerts.data && alerts.data.items.length > 0 ? (
        <table>
          <caption>Alerts, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Level</th>
              <th scope="col">Source</th>
              <th scope="col">Message</th>
              <th scope="col">Raised</th>
              <th scope="col">Acknowledged</th>
            </tr>
          </thead>
          <tbody>
            {alerts.data.items.map((a) => (
              <tr key={a.id} class={`level-${a.level}`}>
                <td>
                  <span class={`badge level-${a.level}`}>{a.level}</span>
                </td>
                <td>
                  {a.source}
                  {a.machine_id ? (
                    <>
                      {" "}
                      (<a href={href("machines", a.machine_id)}>machine {a.machine_id}</a>)
                    </>
                  ) : null}
                </td>
                <td>{a.message}</td>
                <td>
                  <Time at={a.created_at} />
                </td>
                <td>
                  {a.acknowledged_at ? (
                    <>
                      <Time at={a.acknowledged_at} />
                      {a.acknowledged_by ? ` by ${a.acknowledged_by}` : ""}
                    </>
                  ) : can("operate") ? (
                    <ActionButton
                      label="Acknowledge"
                      run={async () => {
                        await request("POST", `/alerts/${a.id}/acknowledge`);
                        alerts.reload();
                        return undefined;
                      }}
                    />
                  ) : (
                    "no"
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {unavailable ? (
        <Section title="Alerts seen since the dashboard was opened">
          {seen.length === 0 ? (
            <p>None yet (system_alert events appear here as they come).</p>
          ) : (
            <ul>
              {seen.map((e) => (
                <li key={e.id}>
                  <span class={`badge level-${String(e.payload.level)}`}>
                    {String(e.payload.level)}
                  </span>{" "}
                  {String(e.payload.source)}: {String(e.payload.message)} (<Time at={e.at} />)
                </li>
              ))}
            </ul>
          )}
        </Section>
      ) : null}
    </>
  );
}
