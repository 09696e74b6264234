import { useEffect, useState } from "preact/hooks";
import { ApiError, list, request } from "../api.ts";
import { href } from "../router.ts";
import { eventLabel, machineState, stateLabel } from "../state.ts";
import type { Location, Machine } from "../types.ts";
import {
  ActionButton,
  can,
  Loading,
  Problem,
  Title,
  useInterval,
  useLive,
  useResource,
  useThrottle,
} from "../ui.tsx";

interface Room {
  key: string;
  name: string;
  locationId: number | undefined;
  machines: Machine[];
}

/** Rooms from /api/locations when the server has them, else from each machine's room text. */
function rooms(machines: Machine[], locations: Location[] | undefined): Room[] {
  const byKey = new Map<string, Room>();
  const room = (key: string, name: string, locationId?: number) => {
    let r = byKey.get(key);
    if (!r) {
      r = { key, name, locationId, machines: [] };
      byKey.set(key, r);
    }
    return r;
  };
  for (const l of locations ?? []) room(`l${l.id}`, l.name, l.id);
  for (const m of machines) {
    const loc = locations && m.location_id != null ? byKey.get(`l${m.location_id}`) : undefined;
    if (loc) loc.machines.push(m);
    else {
      const name = [m.location, m.room].filter(Boolean).join(" · ");
      room(`t${name}`, name || "No room").machines.push(m);
    }
  }
  return [...byKey.values()].sort((a, b) =>
    a.name === "No room" ? 1 : b.name === "No room" ? -1 : a.name.localeCompare(b.name),
  );
}

export async function loadLocations(): Promise<Location[] | undefined> {
  try {
    return (await list<Location>("/locations?limit=1000")).items;
  } catch (err) {
    // No rooms resource yet (404), or a role that may not read it: group by text.
    if (err instanceof ApiError && (err.status === 404 || err.status === 403)) return undefined;
    throw err;
  }
}

const BULK_ACTIONS: { action: string; label: string }[] = [
  { action: "power_on", label: "Power on" },
  { action: "power_off", label: "Power off" },
  { action: "power_cycle", label: "Power cycle" },
  { action: "reset_overlay", label: "Reset overlays" },
];

export function FleetPage() {
  const machines = useResource(() => list<Machine>("/machines?limit=1000&sort=name"), []);
  const locations = useResource(loadLocations, []);
  const [lastEvent, setLastEvent] = useState<Record<number, { type: string; at: string }>>({});
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const operate = can("operate");

  // Events name a machine: its tile changes at once (state in the payload, or the event's
  // name), and the list is read again, at most once a second however many PCs boot.
  const reread = useThrottle(machines.reload, 1000);
  const [liveStates, setLiveStates] = useState<Record<number, string>>({});
  useLive((e) => {
    const id = e.payload.machine_id;
    if (typeof id !== "number") return;
    setLastEvent((prev) => ({ ...prev, [id]: { type: e.type, at: e.at } }));
    const state = e.payload.state;
    if (typeof state === "string") setLiveStates((prev) => ({ ...prev, [id]: state }));
    reread();
  });
  // A fresh list is the truth again: states from events only bridge the wait for it.
  useEffect(() => setLiveStates({}), [machines.data]);
  // Machines created or changed by someone else send no event: a slow re-read finds them.
  useInterval(() => {
    machines.reload();
  }, 15_000);

  const all = machines.data?.items ?? [];
  const groups = rooms(all, locations.data);
  const toggle = (id: number, on: boolean) =>
    setSelected((prev) => {
      const next = new Set(prev);
      if (on) next.add(id);
      else next.delete(id);
      return next;
    });

  return (
    <>
      <Title>Fleet</Title>
      <p class="muted">
        {all.length} machine{all.length === 1 ? "" : "s"}; tiles follow the event stream.
      </p>
      <Problem error={machines.error} what="Machines" />
      <Problem error={locations.error} what="Rooms" />
      <Loading when={machines.loading && !machines.data} />
      {operate ? (
        <BulkBar
          selected={selected}
          clear={() => setSelected(new Set())}
          onDone={machines.reload}
        />
      ) : null}
      {machines.data && all.length === 0 ? (
        <p>
          No machines yet. A PC that boots from the network shows up here by itself; machines can
          also be added through the API (POST /api/machines).
        </p>
      ) : null}
      {groups.map((r) => (
        <section key={r.key} class="room" aria-labelledby={`room-${r.key}`}>
          <h2 id={`room-${r.key}`}>
            {r.name} <span class="count">({r.machines.length})</span>
          </h2>
          {operate && r.machines.length > 0 ? (
            <label class="select-room">
              <input
                type="checkbox"
                checked={r.machines.every((m) => selected.has(m.id))}
                onChange={(e) => {
                  const on = (e.currentTarget as HTMLInputElement).checked;
                  for (const m of r.machines) toggle(m.id, on);
                }}
              />{" "}
              Select all in {r.name}
            </label>
          ) : null}
          <ul class="grid">
            {r.machines.map((m) => {
              const state = liveStates[m.id] ?? machineState(m);
              const ev = lastEvent[m.id];
              return (
                <li key={m.id} class={`tile state-${state}`} data-machine-id={m.id}>
                  <div class="tile-head">
                    {operate ? (
                      <input
                        type="checkbox"
                        aria-label={`Select ${m.name}`}
                        checked={selected.has(m.id)}
                        onChange={(e) =>
                          toggle(m.id, (e.currentTarget as HTMLInputElement).checked)
                        }
                      />
                    ) : null}
                    <a href={href("machines", m.id)} class="tile-name">
                      {m.name}
                    </a>
                  </div>
                  <p class="tile-state" data-state={state}>
                    <span class="dot" aria-hidden="true" />
                    {stateLabel(state)}
                  </p>
                  <p class="tile-meta">
                    {m.ip_address ?? m.mac_address}
                    {m.status_reason ? ` · ${m.status_reason}` : ""}
                  </p>
                  {ev ? (
                    <p class="tile-event">
                      {eventLabel(ev.type)} at {new Date(ev.at).toLocaleTimeString()}
                    </p>
                  ) : null}
                </li>
              );
            })}
          </ul>
        </section>
      ))}
    </>
  );
}

/**
 * Actions on the selection, one job on the server (POST /api/machines/bulk). Without that
 * endpoint the buttons say so: power of a single machine is on its own page.
 */
function BulkBar(props: { selected: Set<number>; clear: () => void; onDone: () => void }) {
  const [job, setJob] = useState<number | undefined>(undefined);
  const n = props.selected.size;
  if (n === 0) {
    return <p class="muted bulk-hint">Select machines (or a whole room) for bulk actions.</p>;
  }
  return (
    <section class="bulk" aria-label="Bulk actions">
      <span>
        {n} selected{" "}
        <button type="button" class="link" onClick={props.clear}>
          clear
        </button>
      </span>
      {BULK_ACTIONS.map((a) => (
        <ActionButton
          key={a.action}
          label={a.label}
          confirm={
            a.action === "power_on" ? undefined : `${a.label} ${n} machine${n === 1 ? "" : "s"}?`
          }
          run={async () => {
            const r = await request<{ job_id?: number }>("POST", "/machines/bulk", {
              action: a.action,
              machine_ids: [...props.selected],
            });
            setJob(r.job_id);
            props.onDone();
            return r.job_id ? `started job ${r.job_id}` : "done";
          }}
        />
      ))}
      {job ? <a href={href("jobs", job)}>Follow job {job}</a> : null}
    </section>
  );
}
