import { randomUUID } from "node:crypto";
import type { Store } from "../../store/index.js";
import type { User } from "../../store/users.js";
import { ApiError } from "../errors.js";
import type { AuthUser } from "../types.js";

export const ACCESS_TTL_SECONDS = 1800;
/** A login lasts a week at most: refresh tokens rotate inside that bound. */
export const SESSION_TTL_SECONDS = 7 * 24 * 3600;
const ISSUER = "bootfleet";
const AUDIENCE = "bootfleet-api";

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: "bearer";
  expires_in: number;
}

type TokenUse = "access" | "refresh";

/** Verified access tokens kept; beyond it the oldest goes (a few per dashboard tab). */
const MAX_VERIFIED = 1000;

interface Verified {
  user: AuthUser;
  /** Store.generation() when it was verified: any write since means verify again. */
  generation: string;
  /** The time span (ms) in which the token and its session are valid: nbf to the first end. */
  from: number;
  until: number;
}

/**
 * jose, loaded with the first token signed or checked (a login, an authenticated request),
 * not at daemon start: a daemon nobody has logged in to yet does not hold it in memory.
 */
let jose: Promise<typeof import("jose")> | undefined;
const loadJose = () => {
  jose ??= import("jose");
  return jose;
};

function refuse(detail: string): ApiError {
  return new ApiError(401, "authentication_error", detail);
}

/**
 * Access and refresh tokens (HS256 JWTs). Both carry the login session ("sid"), so one
 * revocation ends both; each says what it is ("use"), so neither stands in for the
 * other. The user's role and status are read from the store on every request, never
 * trusted from the token, so disabling a user or changing a role takes effect at once.
 */
export class TokenService {
  /**
   * Access tokens verified already. Checking one costs an HMAC and two reads; a client
   * sends the same token with every request for its 30 minutes. Kept only while the store
   * is unchanged (any write at all, so a revoked session, a disabled user or a new role
   * takes effect on the next request, as without it) and within the token's and the
   * session's times; a refused token is never kept.
   */
  readonly #verified = new Map<string, Verified>();

  constructor(
    private readonly key: Uint8Array,
    private readonly store: Store,
    private readonly clock: () => number = Date.now,
  ) {}

  /** A new login session for a user whose password was just checked. */
  async issue(user: User, clientIp: string | null): Promise<TokenPair> {
    const sid = randomUUID();
    const jti = randomUUID();
    const now = this.nowSeconds();
    const expires = now + SESSION_TTL_SECONDS;
    this.store.authSessions.create({
      id: sid,
      user_id: user.id,
      refresh_jti: jti,
      expires_at: new Date(expires * 1000).toISOString(),
      client_ip: clientIp,
    });
    return this.pair(user.id, sid, jti, expires);
  }

  /**
   * The caller behind an access token verified already, while that still holds (see
   * #verified); undefined otherwise, and verifyAccess decides. Synchronous, so the request
   * that polls with the same token again takes no turn of the microtask queue for it.
   */
  kept(token: string): AuthUser | undefined {
    const kept = this.#verified.get(token);
    if (!kept) return undefined;
    const now = this.clock();
    if (kept.generation === this.store.generation() && kept.from <= now && now < kept.until) {
      return kept.user;
    }
    this.#verified.delete(token);
    return undefined;
  }

  /** The caller behind an access token, or a 401. */
  async verifyAccess(token: string): Promise<AuthUser> {
    const known = this.kept(token);
    if (known) return known;
    const generation = this.store.generation();
    const claims = await this.verify(token, "access");
    const session = this.liveSession(claims.sid);
    const user = this.liveUser(claims.sub);
    if (session.user_id !== user.id) throw refuse("token does not match its session");
    const caller: AuthUser = {
      id: user.id,
      username: user.username,
      role: user.role,
      sessionId: session.id,
    };
    // Only if nothing was written while it was checked (verify awaits).
    if (this.store.generation() === generation) {
      if (this.#verified.size >= MAX_VERIFIED) {
        const oldest = this.#verified.keys().next().value;
        if (oldest !== undefined) this.#verified.delete(oldest);
      }
      this.#verified.set(token, {
        user: caller,
        generation,
        from: claims.nbf * 1000,
        until: Math.min(claims.exp * 1000, Date.parse(session.expires_at)),
      });
    }
    return caller;
  }

  /**
   * Exchanges the family's current refresh token for a new pair. An older token of the
   * family (already exchanged) means a copy is in someone else's hands: the whole
   * family is revoked, the legitimate holder logs in again.
   */
  async refresh(token: string): Promise<TokenPair> {
    const claims = await this.verify(token, "refresh");
    const session = this.liveSession(claims.sid);
    if (session.refresh_jti !== claims.jti) {
      this.store.authSessions.revoke(session.id, "refresh token reused");
      throw refuse("refresh token already used: the session is revoked, log in again");
    }
    const user = this.liveUser(claims.sub);
    const next = randomUUID();
    if (!this.store.authSessions.rotate(session.id, claims.jti, next)) {
      this.store.authSessions.revoke(session.id, "refresh token reused");
      throw refuse("refresh token already used: the session is revoked, log in again");
    }
    return this.pair(user.id, session.id, next, Date.parse(session.expires_at) / 1000);
  }

  logout(sessionId: string): void {
    this.store.authSessions.revoke(sessionId, "logout");
  }

  private async pair(userId: number, sid: string, refreshJti: string, sessionExpires: number) {
    const now = this.nowSeconds();
    const access = await this.sign(
      userId,
      sid,
      randomUUID(),
      "access",
      now,
      now + ACCESS_TTL_SECONDS,
    );
    const refresh = await this.sign(
      userId,
      sid,
      refreshJti,
      "refresh",
      now,
      Math.floor(sessionExpires),
    );
    return {
      access_token: access,
      refresh_token: refresh,
      token_type: "bearer" as const,
      expires_in: ACCESS_TTL_SECONDS,
    };
  }

  private async sign(
    sub: number,
    sid: string,
    jti: string,
    use: TokenUse,
    iat: number,
    exp: number,
  ) {
    const { SignJWT } = await loadJose();
    return new SignJWT({ sid, use })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(String(sub))
      .setJti(jti)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(exp)
      .sign(this.key);
  }

  private async verify(token: string, use: TokenUse) {
    const { errors: joseErrors, jwtVerify } = await loadJose();
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.key, {
        algorithms: ["HS256"],
        issuer: ISSUER,
        audience: AUDIENCE,
        currentDate: new Date(this.clock()),
        requiredClaims: ["exp", "nbf", "iat", "sub", "jti"],
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw refuse("token expired");
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === "nbf") {
        throw refuse("token not yet valid");
      }
      throw refuse("invalid token");
    }
    if (payload.use !== use)
      throw refuse(`not an ${use === "access" ? "access" : "refresh"} token`);
    if (typeof payload.sid !== "string" || typeof payload.sub !== "string") {
      throw refuse("invalid token");
    }
    return {
      sid: payload.sid,
      sub: payload.sub,
      jti: payload.jti as string,
      nbf: payload.nbf as number,
      exp: payload.exp as number,
    };
  }

  private liveSession(sid: string) {
    const session = this.store.authSessions.get(sid);
    if (!session || session.revoked_at !== null) throw refuse("session ended: log in again");
    if (Date.parse(session.expires_at) <= this.clock()) throw refuse("session expired");
    return session;
  }

  private liveUser(sub: string) {
    const user = this.store.users.get(Number(sub));
    if (!user) throw refuse("user no longer exists");
    if (user.status !== "active") throw refuse("user is disabled");
    return user;
  }

  private nowSeconds() {
    return Math.floor(this.clock() / 1000);
  }
}
