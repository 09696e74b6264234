import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { actionErrorText } from "./ui.tsx";

/**
 * A small form for an action that takes a comment (commit, promote, snapshot, open an
 * update): its fields, one submit button, and the outcome beside it. A refusal shows the
 * API's own words (a 409 says which update is open, a live session, ...).
 */
export function CommentAction(props: {
  /** Unique on the page: the ids of its fields derive from it. */
  id: string;
  button: string;
  commentLabel: string;
  /** The API refuses an empty comment where one is required; the browser says it first. */
  required?: boolean;
  confirm?: string;
  /** Fields before the comment (a select of machines). */
  children?: ComponentChildren;
  run: (comment: string, form: FormData) => Promise<string | undefined>;
}) {
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | undefined>(undefined);
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    if (props.confirm && !window.confirm(props.confirm)) return;
    const data = new FormData(form);
    setBusy(true);
    setMsg(undefined);
    try {
      const text = await props.run(String(data.get("comment") ?? ""), data);
      setMsg(text ? { ok: true, text } : undefined);
      form.reset();
    } catch (err) {
      setMsg({ ok: false, text: actionErrorText(err) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="inline-form" onSubmit={onSubmit}>
      {props.children}
      <label for={`${props.id}-comment`}>{props.commentLabel}</label>
      <input
        id={`${props.id}-comment`}
        name="comment"
        maxLength={2000}
        required={props.required ?? false}
      />
      <button type="submit" disabled={busy}>
        {props.button}
      </button>
      {msg ? (
        <span class={msg.ok ? "ok" : "error"} role={msg.ok ? "status" : "alert"}>
          {msg.text}
        </span>
      ) : null}
    </form>
  );
}
