import { useState } from "preact/hooks";
import { ApiError, login } from "../api.ts";

export function LoginPage() {
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    setBusy(true);
    setError(undefined);
    try {
      await login(String(form.get("username") ?? ""), String(form.get("password") ?? ""));
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 429
          ? `Too many attempts: ${err.detail}`
          : err instanceof ApiError && err.status === 401
            ? "Wrong user name or password, or the account is disabled."
            : (err as Error).message,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="login">
      <h1>bootfleet</h1>
      <p class="muted">Log in with your bootfleet account.</p>
      <form onSubmit={onSubmit} aria-describedby={error ? "login-error" : undefined}>
        <label for="username">User name or email</label>
        <input id="username" name="username" autocomplete="username" required />
        <label for="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autocomplete="current-password"
          required
        />
        <button type="submit" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
        {error ? (
          <p id="login-error" class="note error" role="alert">
            {error}
          </p>
        ) : null}
      </form>
    </main>
  );
}
