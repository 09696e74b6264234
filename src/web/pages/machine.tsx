import { ApiError, list, request, user } from "../api.ts";
import { href } from "../router.ts";
import { machineState, stateLabel } from "../state.ts";
import type { Image, Machine, Phases, Session, Target } from "../types.ts";
import {
  ActionButton,
  bytes,
  can,
  Gauge,
  Loading,
  Problem,
  Section,
  seconds,
  Time,
  Title,
  useLive,
  useResource,
  useThrottle,
} from "../ui.tsx";
import { loadLocations } from "./fleet.tsx";
import { TargetDisk } from "./target-disk.tsx";

const POWER = [
  { action: "on", label: "Power on" },
  { action: "off", label: "Power off" },
  { action: "cycle", label: "Power cycle" },
  { action: "query", label: "Query power" },
];

export function MachinePage({ id }: { id: number }) {
  const machine = useResource(() => request<Machine>("GET", `/machines/${id}`), [id]);
  const reread = useThrottle(machine.reload, 1000);
  const fleetReader = user()?.role !== "client";
  const sessions = useResource(
    () =>
      fleetReader
        ? list<Session>(`/sessions?machine_id=${id}&sort=started_at&order=desc&limit=5`)
        : Promise.resolve(undefined),
    [id],
  );
  const targets = useResource(
    () => (fleetReader ? list<Target>(`/targets?machine_id=${id}`) : Promise.resolve(undefined)),
    [id],
  );
  const rereadSessions = useThrottle(sessions.reload, 1000);
  useLive((e) => {
    if (e.payload.machine_id !== id) return;
    reread();
    rereadSessions();
  });

  const m = machine.data;
  if (machine.error instanceof ApiError && machine.error.status === 404) {
    return (
      <>
        <Title>Machine {id}</Title>
        <p class="note">
          No such machine (or not yours). <a href={href("fleet")}>Back to the fleet</a>.
        </p>
      </>
    );
  }
  const state = m ? machineState(m) : undefined;
  return (
    <>
      <p class="crumbs">
        <a href={href("fleet")}>Fleet</a> /
      </p>
      <Title>{m ? m.name : `Machine ${id}`}</Title>
      <Problem error={machine.error} what="Machine" />
      <Loading when={machine.loading && !m} />
      {m && state ? (
        <>
          <p class={`state-line state-${state}`}>
            <span class="dot" aria-hidden="true" />
            {stateLabel(state)}
            {m.status_reason ? ` — ${m.status_reason}` : ""}
          </p>
          {can("power") ? (
            <Section title="Power">
              <div class="actions">
                {POWER.map((p) => (
                  <ActionButton
                    key={p.action}
                    label={p.label}
                    confirm={
                      p.action === "off" || p.action === "cycle"
                        ? `${p.label} ${m.name}?`
                        : undefined
                    }
                    run={async () => {
                      const r = await request<{ message: string; state?: string }>(
                        "POST",
                        `/machines/${id}/power/${p.action}`,
                      );
                      return r.state ? `${r.message} (state: ${r.state})` : r.message;
                    }}
                  />
                ))}
              </div>
            </Section>
          ) : null}
          <Section title="Details">
            <dl class="props">
              <dt>MAC address</dt>
              <dd>{m.mac_address}</dd>
              <dt>IP address</dt>
              <dd>{m.ip_address ?? "–"}</dd>
              <dt>Room</dt>
              <dd>{[m.location, m.room].filter(Boolean).join(" · ") || "–"}</dd>
              <dt>Status</dt>
              <dd>{m.status}</dd>
              <dt>Boot mode</dt>
              <dd>{m.boot_mode}</dd>
              <dt>Boot action</dt>
              <dd>{m.boot_action}</dd>
              <dt>Overlay policy</dt>
              <dd>{m.overlay_policy}</dd>
              <dt>Power control</dt>
              <dd>{m.bmc_address ? `BMC at ${m.bmc_address}` : "Wake-on-LAN only"}</dd>
              <dt>Boots</dt>
              <dd>{m.boot_count}</dd>
              <dt>Last boot</dt>
              <dd>
                <Time at={m.last_boot} />
              </dd>
              <dt>Last seen</dt>
              <dd>
                <Time at={m.last_seen} />
              </dd>
            </dl>
          </Section>
          {can("operate") ? <BootSettings machine={m} onSaved={machine.reload} /> : null}
        </>
      ) : null}
      {fleetReader ? (
        <>
          <Section title="iSCSI target">
            <Problem error={targets.error} what="Target" />
            {targets.data && targets.data.items.length === 0 ? (
              <p>No target: this machine boots without a disk from this server.</p>
            ) : null}
            {targets.data?.items.map((t) => (
              <TargetView
                key={t.id}
                target={t}
                machineId={id}
                persistent={m?.overlay_policy === "persistent"}
                onChanged={targets.reload}
              />
            ))}
          </Section>
          <Section title="Boot timeline">
            <Problem error={sessions.error} what="Boot sessions" />
            {sessions.data ? <Timeline sessions={sessions.data.items} /> : null}
          </Section>
        </>
      ) : null}
    </>
  );
}

function TargetView(props: {
  target: Target;
  machineId: number;
  persistent: boolean;
  onChanged: () => void;
}) {
  const { target: t, machineId } = props;
  const used = t.overlay_allocated_bytes;
  const size = t.overlay_size_bytes;
  return (
    <div class="target">
      <dl class="props">
        <dt>IQN</dt>
        <dd class="mono">{t.iqn}</dd>
        <dt>Portal</dt>
        <dd class="mono">
          {t.portal_ip}:{t.portal_port}
        </dd>
        <dt>Status</dt>
        <dd>
          {t.status}
          {t.status_reason ? ` — ${t.status_reason}` : ""}
        </dd>
        <dt>System image</dt>
        <dd>{t.system_image_name ?? "–"}</dd>
        {t.extra_disk_image_name ? (
          <>
            <dt>Extra disk</dt>
            <dd>
              {t.extra_disk_image_name} ({t.extra_disk_mountpoint ?? "D:"})
            </dd>
          </>
        ) : null}
      </dl>
      <h3>Overlay</h3>
      {used == null ? (
        <p class="muted">Overlay usage is not reported by this server yet.</p>
      ) : size ? (
        <Gauge
          id={`overlay-${t.id}`}
          label="Overlay usage"
          percent={(used / size) * 100}
          detail={`${bytes(used)} of ${bytes(size)}`}
        />
      ) : (
        <p>
          {bytes(used)} written
          {t.overlay_usage_at ? (
            <>
              {" "}
              (<Time at={t.overlay_usage_at} />)
            </>
          ) : null}
        </p>
      )}
      {can("operate") ? (
        <ActionButton
          label="Reset overlay"
          confirm="Throw away everything this machine wrote to its disk?"
          run={async () => {
            const r = await request<{ job_id?: number }>("POST", "/machines/bulk", {
              action: "reset_overlay",
              machine_ids: [machineId],
            });
            return r.job_id ? `started job ${r.job_id}` : "done";
          }}
        />
      ) : null}
      <TargetDisk target={t} persistent={props.persistent} onChanged={props.onChanged} />
    </div>
  );
}

const PHASES: { key: keyof Phases | "started_at"; label: string }[] = [
  { key: "started_at", label: "start" },
  { key: "dhcp_offer_at", label: "DHCP" },
  { key: "tftp_done_at", label: "TFTP" },
  { key: "script_served_at", label: "iPXE script" },
  { key: "iscsi_login_at", label: "iSCSI login" },
];

interface Segment {
  label: string;
  seconds: number;
}

/** The phases of one boot: each from the previous phase that happened to this one. */
export function bootSegments(s: Session): Segment[] {
  const at = (k: string) => {
    const v = k === "started_at" ? s.started_at : s.phases?.[k as keyof Phases];
    return v ? Date.parse(v) : undefined;
  };
  const out: Segment[] = [];
  let prev = at("started_at");
  for (const p of PHASES.slice(1)) {
    const t = at(p.key);
    if (t === undefined || prev === undefined) continue;
    out.push({ label: p.label, seconds: Math.max(0, (t - prev) / 1000) });
    prev = t;
  }
  return out;
}

function Timeline({ sessions }: { sessions: Session[] }) {
  if (sessions.length === 0) return <p>No boots recorded yet.</p>;
  return (
    <table class="timeline">
      <caption>
        {sessions.length === 1
          ? "The last boot"
          : `The last ${sessions.length} boots, newest first`}
      </caption>
      <thead>
        <tr>
          <th scope="col">Started</th>
          <th scope="col">Status</th>
          <th scope="col">Phases</th>
          {PHASES.slice(1).map((p, i) => (
            <th scope="col" key={p.key}>
              <span class={`swatch phase-${i}`} aria-hidden="true" /> {p.label}
            </th>
          ))}
          <th scope="col">Boot total</th>
          <th scope="col">Disk logins</th>
          <th scope="col">Session</th>
        </tr>
      </thead>
      <tbody>
        {sessions.map((s) => {
          const segs = bootSegments(s);
          const total = segs.reduce((a, b) => a + b.seconds, 0);
          const of = (label: string) => segs.find((x) => x.label === label)?.seconds;
          return (
            <tr key={s.id}>
              <td>
                <Time at={s.started_at} />
              </td>
              <td>
                {s.status}
                {s.error ? ` — ${s.error}` : ""}
              </td>
              <td>
                <PhaseBar segments={segs} total={total} />
              </td>
              {PHASES.slice(1).map((p) => (
                <td key={p.key} class="num">
                  {seconds(of(p.label))}
                </td>
              ))}
              <td class="num">{segs.length ? seconds(total) : "–"}</td>
              <td class="num">{diskLogins(s)}</td>
              <td class="num">{seconds(s.duration_seconds)}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/**
 * How many times this boot logged in to its disk, and when the booted OS last did (from the
 * boot's start): iPXE logs in first, then the OS takes its disk over (initramfs, iscsid).
 * One login on a boot that reached its OS long ago says the OS never took its disk over.
 */
export function diskLogins(s: Session): string {
  const n = s.iscsi_logins ?? 0;
  if (n === 0) return "–";
  const os = s.phases?.iscsi_relogin_at;
  if (!os || n < 2) return `${n}`;
  return `${n} · OS ${seconds((Date.parse(os) - Date.parse(s.started_at)) / 1000)}`;
}

/** The boot's phases as one bar, each phase as wide as it took (SVG: no inline style). */
function PhaseBar({ segments, total }: { segments: Segment[]; total: number }) {
  if (!segments.length || total <= 0) return <span class="muted">no phases recorded</span>;
  let x = 0;
  const summary = segments.map((s) => `${s.label} ${seconds(s.seconds)}`).join(", ");
  return (
    <svg class="phasebar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img">
      <title>{summary}</title>
      {segments.map((s, i) => {
        const w = (s.seconds / total) * 100;
        const rect = (
          <rect key={s.label} class={`phase phase-${i}`} x={x} y={0} width={w} height={10} />
        );
        x += w;
        return rect;
      })}
    </svg>
  );
}

const BOOT_ACTIONS = ["sanboot", "menu", "local", "kernel", "custom", "disabled"];

function BootSettings({ machine: m, onSaved }: { machine: Machine; onSaved: () => void }) {
  const images = useResource(() => list<Image>("/images?limit=1000&sort=name"), []);
  // Rooms as a resource, where the server has them; else the two text fields alone.
  const locations = useResource(loadLocations, []);
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const f = new FormData(form);
    const out = form.querySelector("output");
    const imageId = String(f.get("boot_image_id") ?? "");
    try {
      await request("PUT", `/machines/${m.id}`, {
        boot_action: f.get("boot_action"),
        boot_image_id: imageId === "" ? null : Number(imageId),
        overlay_policy: f.get("overlay_policy"),
        location: String(f.get("location") ?? ""),
        room: String(f.get("room") ?? ""),
        ...(f.has("location_id")
          ? { location_id: f.get("location_id") === "" ? null : Number(f.get("location_id")) }
          : {}),
      });
      if (out) out.value = "Saved.";
      onSaved();
    } catch (err) {
      if (out) out.value = `Not saved: ${(err as Error).message}`;
    }
  };
  return (
    <Section title="Boot settings">
      <form class="settings" onSubmit={onSubmit}>
        <label for="boot_action">Boot action</label>
        <select id="boot_action" name="boot_action" value={m.boot_action}>
          {BOOT_ACTIONS.map((a) => (
            <option key={a} value={a}>
              {a}
            </option>
          ))}
        </select>
        <label for="boot_image_id">Boot image</label>
        <select id="boot_image_id" name="boot_image_id" value={String(m.boot_image_id ?? "")}>
          <option value="">(none: the target's image)</option>
          {images.data?.items.map((i) => (
            <option key={i.id} value={String(i.id)}>
              {i.name}
            </option>
          ))}
        </select>
        <label for="overlay_policy">Overlay</label>
        <select id="overlay_policy" name="overlay_policy" value={m.overlay_policy}>
          <option value="reset-on-reboot">reset on every boot</option>
          <option value="persistent">persistent</option>
        </select>
        {locations.data ? (
          <>
            <label for="location_id">Room (on the grid)</label>
            <select id="location_id" name="location_id" value={String(m.location_id ?? "")}>
              <option value="">(none)</option>
              {locations.data.map((l) => (
                <option key={l.id} value={String(l.id)}>
                  {l.name}
                </option>
              ))}
            </select>
          </>
        ) : null}
        <label for="location">Location</label>
        <input id="location" name="location" value={m.location} maxLength={128} />
        <label for="room">Room</label>
        <input id="room" name="room" value={m.room} maxLength={128} />
        <button type="submit">Save</button>
        <output aria-live="polite" />
      </form>
    </Section>
  );
}
