import { Fragment } from "preact";
import { useState } from "preact/hooks";
import { list, request } from "../api.ts";
import { href } from "../router.ts";
import type { Image } from "../types.ts";
import {
  bytes,
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
import { ImageVersions } from "./image-versions.tsx";

export function ImagesPage() {
  const images = useResource(() => list<Image>("/images?limit=1000&sort=name"), []);
  const [open, setOpen] = useState<number | undefined>(undefined);
  const reread = useThrottle(images.reload, 1000);
  useLive((e) => {
    if (e.type === "image_uploaded" || e.type.startsWith("image_")) reread();
    if (e.type === "job_progress" && e.payload.type === "image_import") reread();
  });
  return (
    <>
      <Title>Images</Title>
      <Problem error={images.error} what="Images" />
      <Loading when={images.loading && !images.data} />
      {images.data && images.data.items.length === 0 ? <p>No images yet.</p> : null}
      {images.data && images.data.items.length > 0 ? (
        <table>
          <caption>Golden images</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Type</th>
              <th scope="col">Format</th>
              <th scope="col">Size</th>
              <th scope="col">Status</th>
              <th scope="col">Version</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {images.data.items.map((i) => (
              <Fragment key={i.id}>
                <tr>
                  <td>{i.name}</td>
                  <td>{i.image_type}</td>
                  <td>{i.format}</td>
                  <td class="num">{bytes(i.virtual_size_bytes ?? i.size_bytes)}</td>
                  <td>
                    {i.status}
                    {i.status_reason ? ` — ${i.status_reason}` : ""}
                  </td>
                  <td class="num">{i.current_version ?? "–"}</td>
                  <td>
                    <Time at={i.created_at} />
                    {i.created_by_username ? ` by ${i.created_by_username}` : ""}
                  </td>
                  <td>
                    <button
                      type="button"
                      class="link"
                      aria-expanded={open === i.id}
                      onClick={() => setOpen(open === i.id ? undefined : i.id)}
                    >
                      Versions
                    </button>
                  </td>
                </tr>
                {open === i.id ? (
                  <tr>
                    <td colSpan={8}>
                      <ImageVersions image={i} onChanged={images.reload} />
                    </td>
                  </tr>
                ) : null}
              </Fragment>
            ))}
          </tbody>
        </table>
      ) : null}
      {can("admin") ? <Upload onDone={images.reload} /> : null}
    </>
  );
}

function Upload({ onDone }: { onDone: () => void }) {
  const [job, setJob] = useState<number | undefined>(undefined);
  const [msg, setMsg] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    setBusy(true);
    setMsg(undefined);
    try {
      const r = await request<{ job_id: number; name: string }>(
        "POST",
        "/images/upload",
        new FormData(form),
      );
      setJob(r.job_id);
      setMsg(`Uploaded ${r.name}; importing.`);
      form.reset();
      onDone();
    } catch (err) {
      setMsg(`Upload failed: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Section title="Upload an image">
      <form class="settings" onSubmit={onSubmit}>
        <label for="up-file">Disk image file (raw, qcow2, vhd, vhdx, vmdk)</label>
        <input id="up-file" name="file" type="file" required />
        <label for="up-name">Name</label>
        <input id="up-name" name="name" required maxLength={200} />
        <label for="up-desc">Description</label>
        <input id="up-desc" name="description" maxLength={2000} />
        <label for="up-type">Type</label>
        <select id="up-type" name="image_type">
          <option value="system">system</option>
          <option value="game">game</option>
          <option value="data">data</option>
          <option value="template">template</option>
        </select>
        <button type="submit" disabled={busy}>
          {busy ? "Uploading…" : "Upload"}
        </button>
        <p aria-live="polite">
          {msg}
          {job ? (
            <>
              {" "}
              <a href={href("jobs", job)}>Follow job {job}</a>
            </>
          ) : null}
        </p>
      </form>
    </Section>
  );
}
