import { useState } from "preact/hooks";
import { list, user as me, request, type User } from "../api.ts";
import { ActionButton, Loading, Problem, Section, Time, Title, useResource } from "../ui.tsx";

const ROLES = ["admin", "operator", "viewer", "client"];

export function UsersPage() {
  const users = useResource(() => list<User>("/users?limit=1000&sort=username"), []);
  return (
    <>
      <Title>Users</Title>
      <Problem error={users.error} what="Users" />
      <Loading when={users.loading && !users.data} />
      {users.data ? (
        <table>
          <caption>
            {users.data.total} account{users.data.total === 1 ? "" : "s"}
          </caption>
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">Status</th>
              <th scope="col">Last login</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {users.data.items.map((u) => (
              <tr key={u.id}>
                <td>{u.username}</td>
                <td>{u.full_name || "–"}</td>
                <td>
                  <select
                    aria-label={`Role of ${u.username}`}
                    value={u.role}
                    onChange={async (e) => {
                      const role = (e.currentTarget as HTMLSelectElement).value;
                      try {
                        await request("PUT", `/users/${u.id}`, { role });
                      } catch (err) {
                        window.alert(`Role not changed: ${(err as Error).message}`);
                      }
                      users.reload();
                    }}
                  >
                    {ROLES.map((r) => (
                      <option key={r} value={r}>
                        {r}
                      </option>
                    ))}
                  </select>
                </td>
                <td>{u.status}</td>
                <td>
                  <Time at={u.last_login} />
                </td>
                <td class="actions">
                  <ActionButton
                    label={u.status === "active" ? "Disable" : "Enable"}
                    class="secondary"
                    run={async () => {
                      await request("PUT", `/users/${u.id}`, {
                        status: u.status === "active" ? "disabled" : "active",
                      });
                      users.reload();
                      return undefined;
                    }}
                  />
                  <ActionButton
                    label="Reset password"
                    class="secondary"
                    confirm={`Set a new password for ${u.username}? Their logins end.`}
                    run={async () => {
                      const r = await request<{ temporary_password?: string }>(
                        "POST",
                        `/users/${u.id}/reset-password`,
                      );
                      return r.temporary_password
                        ? `new password (shown once): ${r.temporary_password}`
                        : "done";
                    }}
                  />
                  {u.id !== me()?.id ? (
                    <ActionButton
                      label="Delete"
                      class="danger"
                      confirm={`Delete the account ${u.username}?`}
                      run={async () => {
                        await request("DELETE", `/users/${u.id}`);
                        users.reload();
                        return undefined;
                      }}
                    />
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <NewUser onDone={users.reload} />
    </>
  );
}

function NewUser({ onDone }: { onDone: () => void }) {
  const [msg, setMsg] = useState<string | undefined>(undefined);
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const f = new FormData(form);
    const email = String(f.get("email") ?? "").trim();
    try {
      await request("POST", "/users", {
        username: f.get("username"),
        full_name: f.get("full_name"),
        ...(email ? { email } : {}),
        role: f.get("role"),
        password: f.get("password"),
      });
      setMsg(`Created ${String(f.get("username"))}.`);
      form.reset();
      onDone();
    } catch (err) {
      setMsg(`Not created: ${(err as Error).message}`);
    }
  };
  return (
    <Section title="New user">
      <form class="settings" onSubmit={onSubmit}>
        <label for="nu-username">User name</label>
        <input id="nu-username" name="username" required autocomplete="off" />
        <label for="nu-name">Full name</label>
        <input id="nu-name" name="full_name" />
        <label for="nu-email">Email</label>
        <input id="nu-email" name="email" type="email" />
        <label for="nu-role">Role</label>
        <select id="nu-role" name="role">
          {ROLES.map((r) => (
            <option key={r} value={r} selected={r === "viewer"}>
              {r}
            </option>
          ))}
        </select>
        <label for="nu-password">Password</label>
        <input
          id="nu-password"
          name="password"
          type="password"
          required
          autocomplete="new-password"
        />
        <button type="submit">Create</button>
        <p aria-live="polite">{msg}</p>
      </form>
    </Section>
  );
}
