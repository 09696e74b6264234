import type { Db } from "./db.js";
import { nowIso } from "./util.js";

export interface AuthSession {
  id: string;
  user_id: number;
  refresh_jti: string;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  revoked_at: string | null;
  revoked_reason: string | null;
  client_ip: string | null;
}

/** Login sessions: each is one family of rotating refresh tokens. */
export class AuthSessionsRepo {
  constructor(
    private readonly db: Db,
    private readonly clock: () => number = Date.now,
  ) {}

  get(id: string): AuthSession | undefined {
    return this.db.prepare("SELECT * FROM auth_sessions WHERE id = ?").get(id) as
      | AuthSession
      | undefined;
  }

  create(s: Pick<AuthSession, "id" | "user_id" | "refresh_jti" | "expires_at" | "client_ip">) {
    const now = nowIso(this.clock);
    this.db
      .prepare(
        `INSERT INTO auth_sessions (id, user_id, refresh_jti, created_at, last_used_at, expires_at, client_ip)
         VALUES (@id, @user_id, @refresh_jti, @now, @now, @expires_at, @client_ip)`,
      )
      .run({ ...s, now });
  }

  /**
   * Moves the family to its next refresh token, only if `expectedJti` is still the
   * current one: two concurrent refreshes with the same token cannot both win.
   */
  rotate(id: string, expectedJti: string, nextJti: string): boolean {
    return (
      this.db
        .prepare(
          `UPDATE auth_sessions SET refresh_jti = @next, last_used_at = @now
           WHERE id = @id AND refresh_jti = @expected AND revoked_at IS NULL`,
        )
        .run({ id, expected: expectedJti, next: nextJti, now: nowIso(this.clock) }).changes > 0
    );
  }

  revoke(id: string, reason: string): void {
    this.db
      .prepare(
        "UPDATE auth_sessions SET revoked_at = @now, revoked_reason = @reason WHERE id = @id AND revoked_at IS NULL",
      )
      .run({ id, reason, now: nowIso(this.clock) });
  }

  /** Ends every login of a user (password reset, role change, disabling). */
  revokeAllOf(userId: number, reason: string): number {
    return this.db
      .prepare(
        "UPDATE auth_sessions SET revoked_at = @now, revoked_reason = @reason WHERE user_id = @u AND revoked_at IS NULL",
      )
      .run({ u: userId, reason, now: nowIso(this.clock) }).changes;
  }

  /** Forgets sessions that ended long ago, so the table does not grow forever. */
  prune(olderThanIso: string): number {
    return this.db
      .prepare(
        "DELETE FROM auth_sessions WHERE expires_at < @t OR (revoked_at IS NOT NULL AND revoked_at < @t)",
      )
      .run({ t: olderThanIso }).changes;
  }
}
