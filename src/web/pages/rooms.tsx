import { useState } from "preact/hooks";
import { list, request } from "../api.ts";
import type { Location, Machine } from "../types.ts";
import { ActionButton, can, Loading, Problem, Section, Title, useResource } from "../ui.tsx";

/**
 * Rooms as a resource (GET|POST|PUT|DELETE /api/locations), with how many machines each
 * holds. On a server without the resource the page says so; the grid then groups machines
 * by their room text.
 */
export function RoomsPage() {
  const rooms = useResource(() => list<Location>("/locations?limit=1000&sort=name"), []);
  const machines = useResource(() => list<Machine>("/machines?limit=1000"), []);
  const count = (id: number) =>
    machines.data?.items.filter((m) => m.location_id === id).length ?? 0;
  const operate = can("operate");
  return (
    <>
      <Title>Rooms</Title>
      <Problem error={rooms.error} what="Rooms" />
      <Loading when={rooms.loading && !rooms.data} />
      {rooms.data && rooms.data.items.length === 0 ? <p>No rooms yet.</p> : null}
      {rooms.data && rooms.data.items.length > 0 ? (
        <table>
          <caption>Rooms</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Description</th>
              <th scope="col">Machines</th>
              {operate ? (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              ) : null}
            </tr>
          </thead>
          <tbody>
            {rooms.data.items.map((r) => (
              <RoomRow key={r.id} room={r} machines={count(r.id)} onChange={rooms.reload} />
            ))}
          </tbody>
        </table>
      ) : null}
      {operate && rooms.data ? <NewRoom onDone={rooms.reload} /> : null}
    </>
  );
}

function RoomRow(props: { room: Location; machines: number; onChange: () => void }) {
  const r = props.room;
  const [editing, setEditing] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const operate = can("operate");
  if (editing) {
    const onSubmit = async (e: Event) => {
      e.preventDefault();
      const f = new FormData(e.currentTarget as HTMLFormElement);
      try {
        await request("PUT", `/locations/${r.id}`, {
          name: String(f.get("name") ?? ""),
          description: String(f.get("description") ?? ""),
        });
        setError(undefined);
        setEditing(false);
        props.onChange();
      } catch (err) {
        setError(`Not saved: ${(err as Error).message}`);
      }
    };
    return (
      <tr>
        <td colSpan={4}>
          <form class="filters" onSubmit={onSubmit} aria-label={`Rename ${r.name}`}>
            <label>
              Name
              <input name="name" value={r.name} required maxLength={128} />
            </label>
            <label>
              Description
              <input name="description" value={r.description ?? ""} maxLength={1000} />
            </label>
            <button type="submit">Save</button>
            <button type="button" class="secondary" onClick={() => setEditing(false)}>
              Cancel
            </button>
            {error ? (
              <span class="error" role="alert">
                {error}
              </span>
            ) : null}
          </form>
        </td>
      </tr>
    );
  }
  return (
    <tr>
      <td>{r.name}</td>
      <td>{r.description ?? ""}</td>
      <td class="num">{props.machines}</td>
      {operate ? (
        <td class="actions">
          <button type="button" class="secondary" onClick={() => setEditing(true)}>
            Rename
          </button>{" "}
          <ActionButton
            label="Delete"
            class="danger"
            confirm={`Delete the room ${r.name}? Its machines stay, without a room.`}
            run={async () => {
              await request("DELETE", `/locations/${r.id}`);
              props.onChange();
              return undefined;
            }}
          />
        </td>
      ) : null}
    </tr>
  );
}

function NewRoom({ onDone }: { onDone: () => void }) {
  const [msg, setMsg] = useState<string | undefined>(undefined);
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const f = new FormData(form);
    try {
      await request("POST", "/locations", {
        name: String(f.get("name") ?? ""),
        description: String(f.get("description") ?? ""),
      });
      setMsg(`Created ${String(f.get("name"))}.`);
      form.reset();
      onDone();
    } catch (err) {
      setMsg(`Not created: ${(err as Error).message}`);
    }
  };
  return (
    <Section title="New room">
      <form class="settings" onSubmit={onSubmit}>
        <label for="room-name">Name</label>
        <input id="room-name" name="name" required maxLength={128} />
        <label for="room-desc">Description</label>
        <input id="room-desc" name="description" maxLength={1000} />
        <button type="submit">Create</button>
        <p aria-live="polite">{msg}</p>
      </form>
    </Section>
  );
}
