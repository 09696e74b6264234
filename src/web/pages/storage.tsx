import { request } from "../api.ts";
import { href } from "../router.ts";
import type { StorageArea } from "../types.ts";
import {
  ActionButton,
  bytes,
  can,
  Gauge,
  Loading,
  Problem,
  Section,
  Title,
  useResource,
} from "../ui.tsx";

const AREAS: { key: string; label: string }[] = [
  { key: "images_storage", label: "Images" },
  { key: "upload_storage", label: "Uploads" },
  { key: "system_storage", label: "System" },
];

interface DirectoryHealth {
  status: string;
  exists: boolean;
  writable: boolean;
  usage_percent: number | null;
  free_bytes: number | null;
  problem?: string;
}

interface Health {
  status: string;
  directories: Record<string, DirectoryHealth>;
}

export function StoragePage() {
  const info = useResource(
    () => request<Record<string, StorageArea | undefined>>("GET", "/storage/info"),
    [],
  );
  const health = useResource(() => request<Health>("GET", "/storage/health"), []);
  const checks = health.data?.directories ?? {};
  return (
    <>
      <Title>Storage</Title>
      <Problem error={info.error} what="Storage usage" />
      <Loading when={info.loading && !info.data} />
      {info.data ? (
        <div class="gauges">
          {AREAS.map((a) => {
            const s = info.data?.[a.key];
            if (!s) return null;
            return (
              <div class="card" key={a.key}>
                <Gauge
                  id={`gauge-${a.key}`}
                  label={a.label}
                  percent={s.usage_percent}
                  detail={`${bytes(s.used_bytes)} of ${bytes(s.total_bytes)}, ${bytes(s.free_bytes)} free`}
                />
                <p class="mono muted">{s.path}</p>
              </div>
            );
          })}
        </div>
      ) : null}
      <Section title="Health">
        <Problem error={health.error} what="Storage health" />
        {health.data ? (
          <>
            <p>
              Overall: <strong>{health.data.status}</strong>
            </p>
            <table>
              <caption>Folders</caption>
              <thead>
                <tr>
                  <th scope="col">Folder</th>
                  <th scope="col">Status</th>
                  <th scope="col">Detail</th>
                </tr>
              </thead>
              <tbody>
                {Object.entries(checks).map(([path, c]) => (
                  <tr key={path}>
                    <td class="mono">{path}</td>
                    <td>{c.status}</td>
                    <td>
                      {c.problem ??
                        (c.usage_percent === null
                          ? ""
                          : `${c.usage_percent}% used, ${bytes(c.free_bytes)} free`)}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : null}
      </Section>
      {can("admin") ? (
        <Section title="Cleanup">
          <p>
            Finds orphaned image files, dead uploads and overlays no target uses. The dry run lists
            them without removing anything; the result is in the job.
          </p>
          <ActionButton
            label="Dry run"
            run={async () => {
              const r = await request<{ job_id: number }>("POST", "/storage/cleanup", {
                dry_run: true,
              });
              location.hash = href("jobs", r.job_id);
              return `job ${r.job_id}`;
            }}
          />
          <ActionButton
            label="Remove orphaned files"
            class="danger"
            confirm="Remove orphaned image files, dead uploads and unused overlays?"
            run={async () => {
              const r = await request<{ job_id: number }>("POST", "/storage/cleanup", {
                dry_run: false,
              });
              location.hash = href("jobs", r.job_id);
              return `job ${r.job_id}`;
            }}
          />
        </Section>
      ) : null}
    </>
  );
}
