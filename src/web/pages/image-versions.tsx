import { list, request } from "../api.ts";
import { CommentAction } from "../comment-action.tsx";
import type { Image, ImageUpdate, ImageVersion, Target } from "../types.ts";
import {
  ActionButton,
  bytes,
  can,
  Loading,
  Problem,
  Time,
  useLive,
  useResource,
  useThrottle,
} from "../ui.tsx";

/**
 * One image's versions and its update cycle: the versions (current marked, how many rest
 * on each), the open update on its super-client with Commit and Discard, opening one, and
 * rollback. The buttons are an admin's (the API refuses anyone else anyway).
 */
export function ImageVersions({ image, onChanged }: { image: Image; onChanged: () => void }) {
  const versions = useResource(
    () =>
      request<ImageVersion[] | { versions: ImageVersion[] }>("GET", `/images/${image.id}/versions`),
    [image.id],
  );
  const updates = useResource(
    () => request<ImageUpdate[]>("GET", `/images/${image.id}/updates`),
    [image.id],
  );
  const reread = useThrottle(() => {
    versions.reload();
    updates.reload();
  }, 500);
  useLive((e) => {
    if (e.type === "image_version_changed" && e.payload.image_id === image.id) reread();
  });
  // After an action: this panel and the list's current version, whether or not the event
  // stream is up.
  const changed = () => {
    versions.reload();
    updates.reload();
    onChanged();
  };
  const rows = Array.isArray(versions.data) ? versions.data : (versions.data?.versions ?? []);
  const isCurrent = (v: ImageVersion) =>
    v.is_current ?? (v.current || v.version === image.current_version);
  const open = updates.data?.find((u) => u.status === "open");
  const admin = can("admin");
  return (
    <div class="versions">
      <Problem error={versions.error} what={`Versions of ${image.name}`} />
      <Loading when={versions.loading && !versions.data} />
      {versions.data && rows.length === 0 ? <p>No versions recorded.</p> : null}
      {rows.length > 0 ? (
        <table>
          <caption>Versions of {image.name}</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">In use by</th>
              <th scope="col">Size</th>
              <th scope="col">Created</th>
              <th scope="col">Comment</th>
              {admin ? (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              ) : null}
            </tr>
          </thead>
          <tbody>
            {rows.map((v) => (
              <tr key={v.id ?? v.version} class={isCurrent(v) ? "current" : undefined}>
                <td class="num">
                  {v.version}
                  {isCurrent(v) ? " (current)" : ""}
                </td>
                <td class="num">{v.in_use_by ?? "–"}</td>
                <td class="num">{bytes(v.size_bytes)}</td>
                <td>
                  <Time at={v.created_at} />
                  {v.created_by_username ? ` by ${v.created_by_username}` : ""}
                </td>
                <td>{v.comment ?? ""}</td>
                {admin ? (
                  <td>
                    {isCurrent(v) ? null : (
                      <ActionButton
                        label={`Roll back to ${v.version}`}
                        confirm={`Make version ${v.version} of ${image.name} current? The next boots use it.`}
                        run={async () => {
                          await request("POST", `/images/${image.id}/rollback`, {
                            version: v.version,
                          });
                          changed();
                          return `version ${v.version} is current`;
                        }}
                      />
                    )}
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <Problem error={updates.error} what={`Updates of ${image.name}`} />
      {open ? (
        <OpenUpdate image={image} update={open} admin={admin} onChanged={changed} />
      ) : updates.data ? (
        <p class="muted">No open update.</p>
      ) : null}
      {admin && updates.data && !open ? <StartUpdate image={image} onChanged={changed} /> : null}
    </div>
  );
}

function OpenUpdate(props: {
  image: Image;
  update: ImageUpdate;
  admin: boolean;
  onChanged: () => void;
}) {
  const { image, update: u } = props;
  const machine = u.machine_name ?? `machine ${u.machine_id}`;
  return (
    <div class="update-open">
      <h3>Open update {u.id}</h3>
      <dl class="props">
        <dt>Super-client</dt>
        <dd>{machine}</dd>
        <dt>Base version</dt>
        <dd>{u.base_version}</dd>
        <dt>Status</dt>
        <dd>
          {u.status}
          {u.draft_booted_at ? (
            <>
              , draft booted <Time at={u.draft_booted_at} />
            </>
          ) : (
            ", draft not booted yet"
          )}
        </dd>
        {u.comment ? (
          <>
            <dt>Comment</dt>
            <dd>{u.comment}</dd>
          </>
        ) : null}
      </dl>
      {props.admin ? (
        <>
          <CommentAction
            id={`commit-${image.id}`}
            button="Commit"
            commentLabel="What changed (the new version's comment)"
            required
            run={async (comment) => {
              const v = await request<ImageVersion>(
                "POST",
                `/images/${image.id}/updates/${u.id}/commit`,
                { comment },
              );
              props.onChanged();
              return `version ${v.version} committed`;
            }}
          />
          <ActionButton
            label="Discard"
            class="secondary"
            confirm={`Discard update ${u.id} of ${image.name} and everything ${machine} wrote to its draft?`}
            run={async () => {
              await request("POST", `/images/${image.id}/updates/${u.id}/discard`);
              props.onChanged();
              return "update discarded";
            }}
          />
        </>
      ) : null}
    </div>
  );
}

/** The machines that boot this image (a target of it, as system or extra disk). */
function useSuperClients(imageId: number) {
  return useResource(
    () =>
      list<Target>("/targets?limit=1000&sort=name").then((p) =>
        p.items.filter((t) => t.system_image_id === imageId || t.extra_disk_image_id === imageId),
      ),
    [imageId],
  );
}

function StartUpdate({ image, onChanged }: { image: Image; onChanged: () => void }) {
  const targets = useSuperClients(image.id);
  const machines = new Map<number, string>();
  for (const t of targets.data ?? []) {
    if (t.machine_id !== undefined) machines.set(t.machine_id, t.machine_name ?? t.name);
  }
  const id = `open-${image.id}`;
  return (
    <>
      <h3>Open an update</h3>
      <Problem error={targets.error} what="Machines of this image" />
      {targets.data && machines.size === 0 ? (
        <p class="muted">No machine boots {image.name}: give one a target of it first.</p>
      ) : null}
      {machines.size > 0 ? (
        <CommentAction
          id={id}
          button="Open update"
          commentLabel="Comment"
          run={async (comment, form) => {
            const u = await request<ImageUpdate>("POST", `/images/${image.id}/updates`, {
              machine_id: Number(form.get("machine_id")),
              ...(comment ? { comment } : {}),
            });
            onChanged();
            return `update ${u.id} open: ${u.machine_name ?? "the machine"} boots a draft at its next boot`;
          }}
        >
          <label for={`${id}-machine`}>Super-client</label>
          <select id={`${id}-machine`} name="machine_id" required>
            {[...machines].map(([mid, name]) => (
              <option key={mid} value={String(mid)}>
                {name}
              </option>
            ))}
          </select>
        </CommentAction>
      ) : null}
    </>
  );
}
