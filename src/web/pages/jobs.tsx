import { useEffect, useRef, useState } from "preact/hooks";
import { list, request, user } from "../api.ts";
import { href } from "../router.ts";
import type { Job, JobLogs } from "../types.ts";
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

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

function Progress({ job, id }: { job: Pick<Job, "progress" | "status">; id: string }) {
  const p = Math.round(Math.max(0, Math.min(100, job.progress)));
  return (
    <span class="progress">
      <progress id={id} max={100} value={p} aria-label={`Progress ${p}%`}>
        {p}%
      </progress>{" "}
      {p}%
    </span>
  );
}

export function JobsPage() {
  const jobs = useResource(() => list<Job>("/jobs?limit=50"), []);
  // Progress comes with the events; the list is read again for new and finished jobs.
  const [live, setLive] = useState<Record<number, { progress: number; status: string }>>({});
  const reread = useThrottle(jobs.reload, 2000);
  useLive((e) => {
    if (e.type !== "job_progress") return;
    const id = e.payload.job_id as number;
    setLive((prev) => ({
      ...prev,
      [id]: { progress: Number(e.payload.progress), status: String(e.payload.status) },
    }));
    if (!jobs.data?.items.some((j) => j.id === id) || FINISHED.has(String(e.payload.status))) {
      reread();
    }
  });
  return (
    <>
      <Title>Jobs</Title>
      <Problem error={jobs.error} what="Jobs" />
      <Loading when={jobs.loading && !jobs.data} />
      {jobs.data && jobs.data.items.length === 0 ? <p>No jobs yet.</p> : null}
      {jobs.data && jobs.data.items.length > 0 ? (
        <table>
          <caption>Jobs, newest first ({jobs.data.items.length} shown)</caption>
          <thead>
            <tr>
              <th scope="col">Job</th>
              <th scope="col">Type</th>
              <th scope="col">Status</th>
              <th scope="col">Progress</th>
              <th scope="col">Started by</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            {jobs.data.items.map((j) => {
              const now = { ...j, ...(live[j.id] ?? {}) };
              return (
                <tr key={j.id}>
                  <td>
                    <a href={href("jobs", j.id)}>Job {j.id}</a>
                  </td>
                  <td>{j.type}</td>
                  <td class={`job-${now.status}`}>{now.status}</td>
                  <td>
                    <Progress job={now} id={`job-progress-${j.id}`} />
                  </td>
                  <td>{j.created_by_username ?? "–"}</td>
                  <td>
                    <Time at={j.created_at} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
    </>
  );
}

export function JobPage({ id }: { id: number }) {
  const job = useResource(() => request<Job>("GET", `/jobs/${id}`), [id]);
  const reread = useThrottle(job.reload, 2000);
  const [lines, setLines] = useState<JobLogs["logs"]>([]);
  const after = useRef(0);
  const logEl = useRef<HTMLPreElement>(null);
  const [follow, setFollow] = useState(true);
  const status = job.data?.status;

  useLive((e) => {
    if (e.type === "job_progress" && e.payload.job_id === id) reread();
  });

  // The log streams by polling /logs?after=<last line>: every two seconds while the job
  // runs (the API allows a user 100 requests a minute), once more after it finished (its
  // last lines), then never again.
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        const r = await request<JobLogs>("GET", `/jobs/${id}/logs?after=${after.current}`);
        if (stopped) return;
        if (r.logs.length) {
          after.current = r.next_after;
          setLines((prev) => [...prev, ...r.logs].slice(-2000));
        }
        if (!FINISHED.has(r.status)) timer = setTimeout(poll, 2000);
        else if (r.status !== status) reread();
      } catch {
        if (!stopped) timer = setTimeout(poll, 5000);
      }
    };
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [id, status, reread]);

  useEffect(() => {
    if (follow && logEl.current && lines.length) {
      logEl.current.scrollTop = logEl.current.scrollHeight;
    }
  }, [lines, follow]);

  const j = job.data;
  const mayCancel =
    j &&
    !FINISHED.has(j.status) &&
    can("operate") &&
    (user()?.role === "admin" || j.created_by === user()?.id);
  return (
    <>
      <p class="crumbs">
        <a href={href("jobs")}>Jobs</a> /
      </p>
      <Title>Job {id}</Title>
      <Problem error={job.error} what="Job" />
      <Loading when={job.loading && !j} />
      {j ? (
        <>
          <dl class="props">
            <dt>Type</dt>
            <dd>{j.type}</dd>
            <dt>Status</dt>
            <dd class={`job-${j.status}`}>
              {j.status}
              {j.error ? ` — ${j.error}` : ""}
            </dd>
            <dt>Progress</dt>
            <dd>
              <Progress job={j} id="job-progress" />
            </dd>
            <dt>Started</dt>
            <dd>
              <Time at={j.started_at} />
            </dd>
            <dt>Finished</dt>
            <dd>
              <Time at={j.finished_at} />
            </dd>
          </dl>
          {j.steps.length ? (
            <Section title="Steps">
              <ol class="steps">
                {j.steps.map((s) => (
                  <li key={s.name} class={`step-${s.status}`}>
                    {s.name}: {s.status}
                  </li>
                ))}
              </ol>
            </Section>
          ) : null}
          {j.result !== null && j.result !== undefined ? (
            <Section title="Result">
              <JobResult result={j.result} />
            </Section>
          ) : null}
          {mayCancel ? (
            <ActionButton
              label="Cancel job"
              confirm={`Cancel job ${j.id}?`}
              run={async () => {
                const r = await request<{ outcome: string }>("POST", `/jobs/${id}/cancel`);
                reread();
                return r.outcome;
              }}
            />
          ) : null}
        </>
      ) : null}
      <Section title="Log">
        <label class="inline">
          <input
            type="checkbox"
            checked={follow}
            onChange={(e) => setFollow((e.currentTarget as HTMLInputElement).checked)}
          />{" "}
          Follow new lines
        </label>
        {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling region must be reachable by keyboard (WCAG 2.1.1) */}
        <pre class="log" ref={logEl} role="log" aria-live="polite" tabIndex={0}>
          {lines.length === 0
            ? "(no log lines yet)"
            : lines.map((l) => `${l.timestamp} ${l.level.padEnd(5)} ${l.message}\n`).join("")}
        </pre>
      </Section>
    </>
  );
}

interface MachineOutcome {
  machine_id: number;
  machine_name?: string;
  ok?: boolean;
  status?: string;
  message?: string;
  error?: string | null;
}

/**
 * A job's result: per-machine outcomes of a bulk action as a table (`results` or
 * `machines`: [{machine_id, ok|status, message|error}]), anything else as JSON.
 */
function JobResult({ result }: { result: unknown }) {
  const r = result as { results?: unknown; machines?: unknown };
  const rows = (
    Array.isArray(r.results) ? r.results : Array.isArray(r.machines) ? r.machines : undefined
  ) as MachineOutcome[] | undefined;
  if (rows?.every((x) => typeof x?.machine_id === "number")) {
    return (
      <table>
        <caption>Per machine</caption>
        <thead>
          <tr>
            <th scope="col">Machine</th>
            <th scope="col">Outcome</th>
            <th scope="col">Detail</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((x) => (
            <tr key={x.machine_id} class={x.ok === false || x.error ? "failed" : undefined}>
              <td>
                <a href={href("machines", x.machine_id)}>
                  {x.machine_name ?? `machine ${x.machine_id}`}
                </a>
              </td>
              <td>{x.status ?? (x.ok === false ? "failed" : "ok")}</td>
              <td>{x.error ?? x.message ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    );
  }
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling region must be reachable by keyboard (WCAG 2.1.1)
    <pre class="json" tabIndex={0}>
      {JSON.stringify(result, null, 2)}
    </pre>
  );
}
