import { useEffect, useState } from "preact/hooks";
import { request } from "../api.ts";
import { CommentAction } from "../comment-action.tsx";
import type { ImageVersion, Snapshot, Target } from "../types.ts";
import {
  ActionButton,
  bytes,
  can,
  Problem,
  Time,
  useLive,
  useResource,
  useThrottle,
} from "../ui.tsx";

/**
 * A target's disk against its image's versions: the version its overlay rests on, the one
 * it follows or is pinned to, how far behind it is; for a persistent machine its
 * writeback snapshots (take, restore, delete) and Promote into a new version.
 */
export function TargetDisk(props: { target: Target; persistent: boolean; onChanged: () => void }) {
  const t = props.target;
  const snapshots = useResource(
    () => request<Snapshot[]>("GET", `/targets/${t.id}/snapshots`),
    [t.id],
  );
  const reread = useThrottle(() => {
    snapshots.reload();
    props.onChanged();
  }, 500);
  // Its own changes, and a new current version of its image (it may now be behind).
  useLive((e) => {
    if (e.type !== "image_version_changed") return;
    const p = e.payload;
    if (p.target_id === t.id || p.machine_id === t.machine_id || p.image_id === t.system_image_id)
      reread();
  });
  const changed = () => {
    snapshots.reload();
    props.onChanged();
  };
  const behind = t.versions_behind ?? 0;
  return (
    <>
      <h3>Image version</h3>
      <dl class="props">
        <dt>Overlay made from</dt>
        <dd>{t.overlay_version != null ? `version ${t.overlay_version}` : "no overlay yet"}</dd>
        <dt>Follows</dt>
        <dd>
          {t.pinned_version != null
            ? `version ${t.pinned_version} (pinned)`
            : "the current version (not pinned)"}
        </dd>
        <dt>Versions behind</dt>
        <dd>
          {behind}
          {behind > 0 ? " — a reset of its overlay brings it up to date" : ""}
        </dd>
      </dl>
      {can("operate") && t.system_image_id !== undefined ? (
        <Pin target={t} onChanged={changed} />
      ) : null}
      <h3>Writeback snapshots</h3>
      {!props.persistent ? (
        <p class="muted">
          This machine resets its overlay at every boot: it keeps no writeback to snapshot.
        </p>
      ) : null}
      <Problem error={snapshots.error} what="Snapshots" />
      {snapshots.data && snapshots.data.length === 0 ? <p>No snapshots.</p> : null}
      {snapshots.data && snapshots.data.length > 0 ? (
        <table class="snapshots">
          <caption>Snapshots of {t.name}, oldest first</caption>
          <thead>
            <tr>
              <th scope="col">Taken</th>
              <th scope="col">Comment</th>
              <th scope="col">On version</th>
              <th scope="col">Size</th>
              {can("operate") ? (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              ) : null}
            </tr>
          </thead>
          <tbody>
            {snapshots.data.map((s) => (
              <tr key={s.id}>
                <td>
                  <Time at={s.created_at} />
                  {s.created_by_username ? ` by ${s.created_by_username}` : ""}
                </td>
                <td>{s.comment || <span class="muted">(no comment)</span>}</td>
                <td class="num">{s.image_version ?? "–"}</td>
                <td class="num">{bytes(s.size_bytes)}</td>
                {can("operate") ? (
                  <td>
                    <ActionButton
                      label="Restore"
                      confirm={`Put ${t.name}'s disk back to the snapshot of ${new Date(s.created_at).toLocaleString()}? What it wrote since is lost.`}
                      run={async () => {
                        await request("POST", `/targets/${t.id}/snapshots/${s.id}/restore`);
                        changed();
                        return "restored";
                      }}
                    />
                    <ActionButton
                      label="Delete"
                      class="secondary"
                      confirm={`Delete the snapshot "${s.comment || s.id}" of ${t.name}?`}
                      run={async () => {
                        await request("DELETE", `/targets/${t.id}/snapshots/${s.id}`);
                        changed();
                        return undefined;
                      }}
                    />
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {can("operate") && props.persistent ? (
        <CommentAction
          id={`snap-${t.id}`}
          button="Take snapshot"
          commentLabel="Snapshot comment"
          run={async (comment) => {
            await request<Snapshot>("POST", `/targets/${t.id}/snapshots`, { comment });
            changed();
            return "snapshot taken";
          }}
        />
      ) : null}
      {can("admin") && props.persistent ? (
        <>
          <h3>Promote</h3>
          <CommentAction
            id={`promote-${t.id}`}
            button="Promote to a new version"
            commentLabel="The new version's comment"
            required
            confirm={`Make ${t.name}'s disk the next version of ${t.system_image_name ?? "its image"}, booted by every machine that follows it?`}
            run={async (comment) => {
              const v = await request<ImageVersion>("POST", `/targets/${t.id}/promote`, {
                comment,
              });
              changed();
              return `version ${v.version} made from this disk`;
            }}
          />
        </>
      ) : null}
    </>
  );
}

/** Pins the target to a version of its image, or back to following the current one. */
function Pin({ target: t, onChanged }: { target: Target; onChanged: () => void }) {
  const versions = useResource(
    () => request<ImageVersion[]>("GET", `/images/${t.system_image_id}/versions`),
    [t.system_image_id],
  );
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const out = form.querySelector("output");
    const value = String(new FormData(form).get("pinned_version") ?? "");
    try {
      await request("PUT", `/targets/${t.id}/pin`, {
        pinned_version: value === "" ? null : Number(value),
      });
      if (out) out.value = "Saved: its next fresh overlay is of that version.";
      onChanged();
    } catch (err) {
      if (out) out.value = `Not saved: ${(err as Error).message}`;
    }
  };
  // The admin's choice is theirs until the pin itself changes: a re-render from a refresh
  // of the target (another action, an event) used to put the select back to the saved pin
  // between choosing a version and pressing Pin, which then saved the old one.
  const saved = String(t.pinned_version ?? "");
  const [choice, setChoice] = useState(saved);
  useEffect(() => setChoice(saved), [saved]);
  const id = `pin-${t.id}`;
  return (
    <form class="inline-form" onSubmit={onSubmit}>
      <label for={id}>Version to boot</label>
      <select
        id={id}
        name="pinned_version"
        value={choice}
        onChange={(e) => setChoice((e.currentTarget as HTMLSelectElement).value)}
      >
        <option value="">the current version</option>
        {versions.data?.map((v) => (
          <option key={v.version} value={String(v.version)}>
            version {v.version}
            {v.is_current ? " (current)" : ""}
          </option>
        ))}
      </select>
      <button type="submit" class="secondary">
        Pin
      </button>
      <output aria-live="polite" />
    </form>
  );
}
