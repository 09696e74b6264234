import { randomBytes } from "node:crypto";
import { readdir, readFile, rm } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { describeCommand, redact } from "../../host/exec.js";
import { CoalescedRead } from "../../lib/coalesced-read.js";
import { errorText } from "../../lib/error-text.js";
import { KeyedLock } from "../../lib/keyed-lock.js";
import { SharedLock } from "../../lib/shared-lock.js";
import { writeFileAtomic } from "./atomic-write.js";
import {
  parseTgtConf,
  renderTgtConf,
  TGT_NO_ADDRESS,
  type TgtConfView,
  tgtConfFileName,
} from "./tgt-conf.js";
import {
  parseTgtShowAccounts,
  parseTgtShowPortals,
  parseTgtShowTargets,
  type TgtPortalView,
  type TgtTargetView,
} from "./tgt-show.js";
import { alternateUser, type SpareAccount, SpareAccounts } from "./tgt-spares.js";
import { emptyIo, parseTgtStat, parseTgtStatByTid } from "./tgt-stat.js";
import {
  TGTD_ACCOUNT_EXISTS,
  TGTD_ACL_EXISTS,
  TGTD_NO_ACCOUNT,
  type TgtdManager,
  tgtdErrorText,
  tgtdManager,
} from "./tgtd-ipc.js";
import {
  type RemoveOptions,
  type TargetDriver,
  TargetError,
  type TargetIo,
  type TargetSession,
  type TargetSpec,
} from "./types.js";
import { isUnderPrefix, isValidIqn, secretsOf, specProblems } from "./validate.js";

export interface TgtDriverOptions {
  /** e.g. "iqn.2026-11.lan.bootfleet": only targets under it are listed or touched. */
  iqnPrefix: string;
  /** Where one config file per target is kept (production /etc/tgt/conf.d). */
  confDir: string;
  /** tgtd's management port (`tgtd -C N`); 0 is tgtd's default. */
  controlPort?: number;
  logger: Logger;
  /**
   * tgtd's management channel: tgtadm-style arguments in, tgtd's answer out. Default: its
   * Unix socket (tgtd-ipc.ts): no process per request, no password on a command line.
   */
  manage?: TgtdManager;
  /**
   * A new CHAP secret, for the spare accounts made ahead of a boot (tgt-spares.ts); absent:
   * no spares, every boot's secret is deleted and made again in its account.
   */
  spareSecret?: () => string;
  /** How long tgtd must be left without a change of ours before spares are made (10 s). */
  spareQuietMs?: number;
}

const WILDCARDS = new Set(["0.0.0.0", "::"]);

/**
 * The guard account: bound first to every target of ours so that a target always has an
 * incoming account (see TgtDriver). No machine's CHAP user may take this name.
 */
export const TGT_GUARD_USER = "bootfleet-guard";

/**
 * Drives an already running tgtd through its management socket, request by request as
 * tgtadm would. It never starts or restarts tgtd: that would drop every booted machine.
 *
 * The guard account (TGT_GUARD_USER): tgt lets anyone in without CHAP while a target has
 * no incoming account bound, and it cannot change a password (delete the account, make it
 * again, bind it). So every target of ours has the guard bound first, with a random secret
 * this driver makes at start and never stores, logs or hands out: while a machine's
 * account is deleted and made again (each boot's new secret: 3 requests) CHAP is still
 * required and nobody knows a secret that opens the target. The guard must stay in tgt's
 * first account slot: tgt (1.0.85) unbinds by zeroing a slot of its account array and
 * counting one fewer, but lists and checks logins over the first `count` slots, so an
 * empty slot before a bound account crashes tgtd at the next `show` (it dereferences the
 * empty slot: every session gone) and hides that account from logins. The machine's account is always the last slot and is
 * the only one deleted or unbound; a target without the guard first (an older version's,
 * or one tgt-admin restored from its file) has its ACL closed, its accounts unbound from
 * the last, and the guard then its account bound again. An existing guard account
 * (from an earlier run) is kept, not made again: deleting it would empty slot 0 of every
 * target at once, and its secret, random and never stored, is as unknown as a new one.
 */
export class TgtDriver implements TargetDriver {
  readonly name = "tgt" as const;
  readonly firstLun = 1 as const;
  readonly #o: {
    iqnPrefix: string;
    confDir: string;
    controlPort: number;
    logger: Logger;
    manage: TgtdManager;
    spareSecret: (() => string) | undefined;
  };
  /**
   * tgtd's shared state (tids, portals, the global account names) changes under `exclusive`,
   * alone. A change confined to one existing target (its own tid, the account names it
   * already has: each boot's new CHAP secret) runs under `shared`, beside the others: in a
   * boot storm a hundred script requests each wait for their target's new secret, and one
   * queue for all of them made the last wait for the ~10 tgtd round trips of every other.
   */
  readonly #lock = new SharedLock();
  /**
   * tgtd's listings, one request for all who ask at once (each gets a listing sent after it
   * asked). The target listing is the largest answer tgtd gives and every apply reads it.
   */
  readonly #targetListing = new CoalescedRead(() =>
    this.#readListing("target", (text) => this.#forgetChanged(parseTgtShowTargets(text))),
  );
  readonly #portalListing = new CoalescedRead(() =>
    this.#readListing("portal", parseTgtShowPortals),
  );
  readonly #accountListing = new CoalescedRead(() =>
    this.#readListing("account", parseTgtShowAccounts),
  );
  /**
   * Per target: its config file. Written (two fsyncs) outside the shared queue so one
   * machine's disk flush does not hold up every other machine's tgtd requests; in a boot
   * storm each script request applies a new CHAP secret and they all wait in that queue.
   */
  readonly #perTarget = new KeyedLock<string>();
  /**
   * Per target: its tid and shape (LUNs, portal, ACL, account names) as this driver last
   * made it in tgtd, so that a boot's new secret needs no listing (#rotateInPlace). Dropped
   * when a listing shows the target otherwise, on removal, and on any failure.
   */
  readonly #made = new Map<string, MadeTarget>();
  /** Each target's config file text as last written or read (#confText). */
  readonly #confTexts = new Map<string, string>();
  /** The guard account's secret: this process's memory and tgtd's only (class comment). */
  readonly #guardSecret = randomBytes(24).toString("base64url");
  /** Accounts made ahead of boots, bound nowhere (tgt-spares.ts). */
  readonly #spares: SpareAccounts;

  constructor(options: TgtDriverOptions) {
    this.#o = {
      iqnPrefix: options.iqnPrefix,
      confDir: options.confDir,
      controlPort: options.controlPort ?? 0,
      logger: options.logger,
      manage: options.manage ?? tgtdManager(options.controlPort ?? 0),
      spareSecret: options.spareSecret,
    };
    this.#spares = new SpareAccounts({
      quietMs: options.spareQuietMs ?? 10_000,
      logger: options.logger,
      make: (iqn) => this.#perTarget.run(iqn, () => this.#lock.shared(() => this.#makeSpare(iqn))),
    });
  }

  /**
   * The credentials a boot of this target can take without waiting for tgtd to delete and
   * make an account: its spare, when one is ready and the target is bound to `currentUser`
   * as this driver left it. Handed to the store and then to apply(), which binds it in two
   * requests. Undefined: none ready; a fresh secret takes the longer way.
   */
  readySecret(iqn: string, currentUser: string): SpareAccount | undefined {
    const spare = this.#spares.ready(iqn);
    const made = this.#made.get(iqn);
    if (!spare || !made || made.user !== currentUser || !takesSpare(made)) return undefined;
    return { ...spare };
  }

  /** Stops making spares (the daemon stops). */
  close(): void {
    this.#spares.close();
  }

  apply(spec: TargetSpec): Promise<void> {
    const problems = specProblems(spec, this.firstLun);
    if (problems.length > 0)
      return Promise.reject(new TargetError(spec.iqn, `invalid spec: ${problems.join("; ")}`));
    if (!isUnderPrefix(spec.iqn, this.#o.iqnPrefix))
      return Promise.reject(
        new TargetError(spec.iqn, `is not under this driver's prefix ${this.#o.iqnPrefix}`),
      );
    this.#spares.busy();
    return new Promise<void>((resolve, reject) => {
      void this.#perTarget.run(spec.iqn, async () => {
        let before: string | undefined;
        let changes: string[];
        try {
          before = await this.#confText(spec.iqn);
          changes = await this.#applyInTgtd(
            spec,
            before === undefined ? undefined : parseTgtConf(before),
          );
        } catch (err) {
          reject(err);
          return;
        }
        // tgtd serves the spec now: the caller (a boot's script, waiting for its new CHAP
        // secret) goes on while the file is written. The store, not this file, is what a
        // restart applies, and the next change or removal of this target waits for it (the
        // per-target lock). In a 100-PC storm its two fsyncs were 45 ms of each script.
        resolve();
        await this.#persist(spec, before, changes);
      });
    });
  }

  /** Resolves once the changes asked of this target so far, its config file too, are done. */
  async settled(iqn: string): Promise<void> {
    await this.#perTarget.run(iqn, async () => {});
  }

  /**
   * Writes the target's config file (what tgt-admin loads into a fresh tgtd) when it
   * differs. A failure is logged, not thrown: tgtd serves the target already; the file is
   * forgotten, so the next apply writes it again.
   */
  async #persist(spec: TargetSpec, before: string | undefined, changes: string[]): Promise<void> {
    const text = renderTgtConf(spec);
    if (before !== text) {
      try {
        await writeFileAtomic(join(this.#o.confDir, tgtConfFileName(spec.iqn)), text);
        this.#confTexts.set(spec.iqn, text);
        changes.push("persisted");
      } catch (err) {
        this.#confTexts.delete(spec.iqn);
        this.#o.logger.error(
          { iqn: spec.iqn, err: errorText(err) },
          "tgt target config file not written: tgtd serves the target; a restart of tgt would not",
        );
      }
    }
    if (changes.length > 0) this.#o.logger.info({ iqn: spec.iqn, changes }, "tgt target applied");
    else this.#o.logger.debug({ iqn: spec.iqn }, "tgt target already as specified");
  }

  remove(iqn: string, options: RemoveOptions = {}): Promise<void> {
    if (!isValidIqn(iqn) || !isUnderPrefix(iqn, this.#o.iqnPrefix))
      return Promise.reject(new TargetError(iqn, `is not a target under ${this.#o.iqnPrefix}`));
    this.#spares.busy();
    return this.#perTarget.run(iqn, async () => {
      this.#made.delete(iqn);
      const wasRunning = await this.#lock.exclusive(() => this.#remove(iqn, options));
      this.#confTexts.delete(iqn);
      await rm(join(this.#o.confDir, tgtConfFileName(iqn)), { force: true });
      this.#o.logger.info({ iqn, wasRunning }, "tgt target removed");
    });
  }

  async list(): Promise<string[]> {
    const running = (await this.#showTargets("*")).map((t) => t.iqn);
    const persisted: string[] = [];
    for (const f of await readdir(this.#o.confDir).catch(() => [] as string[])) {
      if (f.endsWith(".conf")) persisted.push(f.slice(0, -".conf".length));
    }
    return [...new Set([...running, ...persisted])]
      .filter((iqn) => isValidIqn(iqn) && isUnderPrefix(iqn, this.#o.iqnPrefix))
      .sort();
  }

  async sessions(iqn: string): Promise<TargetSession[]> {
    const t = (await this.#showTargets(iqn)).find((x) => x.iqn === iqn);
    return t ? sessionsOf(t) : [];
  }

  async allSessions(): Promise<Map<string, TargetSession[]>> {
    const all = new Map<string, TargetSession[]>();
    for (const t of await this.#showTargets("*")) {
      if (isUnderPrefix(t.iqn, this.#o.iqnPrefix)) all.set(t.iqn, sessionsOf(t));
    }
    return all;
  }

  async io(iqn: string): Promise<TargetIo> {
    const t = (await this.#showTargets(iqn)).find((x) => x.iqn === iqn);
    if (!t) return { readBytes: 0, writeBytes: 0, commands: 0 };
    const out = await this.#tgtadmOut(
      iqn,
      ["--op", "stat", "--mode", "target", "--tid", `${t.tid}`],
      [],
    );
    return parseTgtStat(out.stdout);
  }

  async allIo(): Promise<Map<string, TargetIo>> {
    // The listing gives each tid its name; the stat, every session's counters by tid.
    const [targets, stat] = await Promise.all([
      this.#showTargets("*"),
      this.#tgtadmOut("*", ["--op", "stat", "--mode", "system"], []),
    ]);
    const byTid = parseTgtStatByTid(stat.stdout);
    const all = new Map<string, TargetIo>();
    for (const t of targets) {
      if (isUnderPrefix(t.iqn, this.#o.iqnPrefix)) all.set(t.iqn, byTid.get(t.tid) ?? emptyIo());
    }
    return all;
  }

  /**
   * tgtd's side of apply, beside other targets' changes when it is confined to this target
   * (see #lock), else alone. The changes made, for the log.
   */
  async #applyInTgtd(spec: TargetSpec, stored: TgtConfView | undefined): Promise<string[]> {
    const before = this.#made.get(spec.iqn);
    const changes = await this.#applyChanges(spec, stored);
    // Spares: the one bound now is one no more, an account of ours left unbound is deleted
    // later, and the next boot's spare is made once tgtd is quiet.
    const made = this.#made.get(spec.iqn);
    this.#spares.inUse(spec.iqn, spec.acl.chapUser);
    if (before && before.user !== spec.acl.chapUser && !changes.includes(SWAPPED))
      this.#spares.retire(spec.iqn, before.user);
    if (this.#o.spareSecret && made && takesSpare(made) && !this.#spares.ready(spec.iqn))
      this.#spares.want(spec.iqn);
    return changes;
  }

  async #applyChanges(spec: TargetSpec, stored: TgtConfView | undefined): Promise<string[]> {
    const made = this.#made.get(spec.iqn);
    const spare = this.#spares.ready(spec.iqn);
    if (
      made &&
      spare &&
      spec.acl.chapUser === spare.user &&
      spec.acl.chapPassword === spare.password &&
      made.shape === shapeOf(spec, made.user)
    ) {
      const swapped = await this.#lock.shared(() => this.#swapToSpare(spec, made, spare));
      if (swapped) return swapped;
    }
    if (made && made.shape === shapeOf(spec)) {
      // As this driver left it, secrets too (a boot taking a secret made ready while its
      // machine was off): no request. Every listing this driver reads (the session poll's,
      // every few seconds) drops a target shown otherwise, which then takes the full path.
      if (storedSecretsMatch(stored, spec)) return [];
      const rotated = await this.#lock.shared(() => this.#rotateInPlace(spec, stored, made));
      if (rotated) return rotated;
    }
    const inPlace = await this.#lock.shared(async () => {
      const [targets, portals] = await Promise.all([
        this.#showTargets(spec.iqn),
        this.#showPortals(spec.iqn),
      ]);
      if (!confinedToTarget(spec, targets, portals)) return undefined;
      // Binding the guard is this target's own change, but it needs the account, which
      // only an exclusive apply makes.
      const existing = targets.find((t) => t.iqn === spec.iqn);
      if (existing && !guarded(existing)) {
        if (!(await this.#showAccounts(spec.iqn)).includes(TGT_GUARD_USER)) return undefined;
      }
      return this.#apply(spec, stored, targets, portals);
    });
    if (inPlace) return inPlace;
    return this.#lock.exclusive(async () => {
      const [targets, portals] = await Promise.all([
        this.#showTargets(spec.iqn),
        this.#showPortals(spec.iqn),
      ]);
      await this.#ensureGuard(spec.iqn);
      return this.#apply(spec, stored, targets, portals);
    });
  }

  /**
   * A boot's new secret for a target this driver made as the spec still wants it: no
   * listing (at 500 targets each is a megabyte tgtd builds and this process parses, and
   * every boot of a storm waited for one read after it asked), 4 requests. The first
   * checks that the tid is still this machine's target: binding the machine's initiator
   * name to its ACL must be refused as already there (initiator names are the machine's
   * own). Anything else (tgtd restarted, the target removed or its tid given to another)
   * and the full path, from a listing, decides; a bind that went through on another
   * target is undone first. Undefined: take the full path.
   */
  async #rotateInPlace(
    spec: TargetSpec,
    stored: TgtConfView | undefined,
    made: MadeTarget,
  ): Promise<string[] | undefined> {
    const iqn = spec.iqn;
    const secrets = secretsOf(spec);
    const acl = ["--tid", `${made.tid}`, "--initiator-name", spec.acl.initiatorIqn];
    let probe: Awaited<ReturnType<TgtdManager>>;
    try {
      probe = await this.#o.manage(["--op", "bind", "--mode", "target", ...acl]);
    } catch {
      this.#made.delete(iqn);
      return undefined;
    }
    if (probe.code !== TGTD_ACL_EXISTS) {
      this.#made.delete(iqn);
      if (probe.code === 0)
        await this.#tgtadm(iqn, ["--op", "unbind", "--mode", "target", ...acl], secrets);
      this.#notAsLeft(iqn, made.tid, tgtdErrorText(probe.code));
      return undefined;
    }
    try {
      await this.#setAccounts(
        iqn,
        made.tid,
        spec,
        [TGT_GUARD_USER, spec.acl.chapUser],
        made.outgoing,
        secrets,
        stored,
      );
    } catch (err) {
      this.#made.delete(iqn);
      throw err;
    }
    return ["updated accounts"];
  }

  /**
   * A boot takes the target's spare (tgt-spares.ts): its account of the last boot unbound,
   * the spare bound, 2 requests. The unbind is also the check that the tid is still this
   * machine's target: it succeeds only where the machine's own account is bound. The guard
   * stays bound in slot 0 and the machine's account is the last slot, so no empty slot is
   * left (class comment). Undefined: the full path decides (tgtd restarted, the target
   * changed behind this driver's back, the spare gone); the guard alone is bound meanwhile.
   */
  async #swapToSpare(
    spec: TargetSpec,
    made: MadeTarget,
    spare: SpareAccount,
  ): Promise<string[] | undefined> {
    const iqn = spec.iqn;
    const account = (op: string, user: string) =>
      this.#o.manage(["--op", op, "--mode", "account", "--tid", `${made.tid}`, "--user", user]);
    let failed: string | undefined;
    try {
      const unbound = await account("unbind", made.user);
      if (unbound.code !== 0) failed = `unbinding ${made.user}: ${tgtdErrorText(unbound.code)}`;
      else {
        const bound = await account("bind", spare.user);
        if (bound.code !== 0) failed = `binding ${spare.user}: ${tgtdErrorText(bound.code)}`;
      }
    } catch (err) {
      failed = errorText(err);
    }
    if (failed !== undefined) {
      this.#made.delete(iqn);
      this.#spares.forget(iqn);
      this.#notAsLeft(iqn, made.tid, failed);
      return undefined;
    }
    this.#made.set(iqn, madeTarget(spec, made.tid));
    this.#spares.swapped(iqn, made.user);
    return [SWAPPED];
  }

  /**
   * Makes the target's spare: its retired account deleted first (tgt's costly request, here
   * off every boot's path), then an account of the target's other name with a new secret.
   * A name tgtd has already is taken over only when no target has it bound (an earlier
   * run's spare, whose secret is lost); one bound to a target is never touched.
   */
  async #makeSpare(iqn: string): Promise<boolean> {
    const made = this.#made.get(iqn);
    const newSecret = this.#o.spareSecret;
    if (!made || !newSecret || !takesSpare(made) || this.#spares.ready(iqn)) return false;
    const retired = this.#spares.retired(iqn);
    if (retired !== undefined && retired !== made.user) {
      await this.#deleteAccount(iqn, retired);
      this.#spares.retiredDeleted(iqn);
    }
    const user = alternateUser(made.user);
    const password = newSecret();
    const create = () =>
      this.#o.manage(["--op", "new", "--mode", "account", "--user", user, "--password", password]);
    let answer = await create();
    if (answer.code === TGTD_ACCOUNT_EXISTS) {
      const owner = (await this.#showTargets(iqn)).find(
        (t) => t.incomingUsers.includes(user) || t.outgoingUsers.includes(user),
      );
      if (owner) {
        this.#o.logger.warn(
          { iqn, user, owner: owner.iqn },
          "tgt spare account name is bound to a target: no spare for this one",
        );
        return false;
      }
      await this.#deleteAccount(iqn, user);
      answer = await create();
    }
    // The password is in no message: only the request's name and tgtd's answer.
    if (answer.code !== 0)
      throw new TargetError(iqn, `making spare account ${user}: ${tgtdErrorText(answer.code)}`);
    this.#spares.made(iqn, { user, password });
    return true;
  }

  /** A kept view that tgtd's answer showed wrong: the full path, from a listing, decides. */
  #notAsLeft(iqn: string, tid: number, answer: string): void {
    this.#o.logger.info(
      { iqn, tid, answer },
      "tgt target not as this driver left it: reading tgtd's listing",
    );
  }

  /** Deletes one of the target's own accounts; one tgtd does not have is fine. */
  async #deleteAccount(iqn: string, user: string): Promise<void> {
    const answer = await this.#o.manage(["--op", "delete", "--mode", "account", "--user", user]);
    if (answer.code !== 0 && answer.code !== TGTD_NO_ACCOUNT)
      throw new TargetError(iqn, `deleting account ${user}: ${tgtdErrorText(answer.code)}`);
  }

  /** Forgets what a listing shows changed since this driver made it. The listing as is. */
  #forgetChanged(targets: TgtTargetView[]): TgtTargetView[] {
    if (this.#made.size === 0) return targets;
    const byIqn = new Map(targets.map((t) => [t.iqn, t]));
    for (const [iqn, made] of this.#made) {
      const t = byIqn.get(iqn);
      // A listing read while this driver changes the target may show it in between (its
      // account deleted, not yet made again): forgotten too, which costs one listing.
      if (!t || t.tid !== made.tid || !guarded(t) || !sameSet(machineUsers(t), [made.user]))
        this.#made.delete(iqn);
    }
    return targets;
  }

  /** The changes of one apply, from tgtd's listings read under #lock. */
  async #apply(
    spec: TargetSpec,
    stored: TgtConfView | undefined,
    targets: readonly TgtTargetView[],
    portals: readonly TgtPortalView[],
  ): Promise<string[]> {
    const iqn = spec.iqn;
    const secrets = secretsOf(spec);
    const tgtadm = (args: string[]) => this.#tgtadm(iqn, args, secrets);
    const changes: string[] = [];

    const existing = targets.find((t) => t.iqn === iqn);

    // tgt accounts are global: a user bound to another target belongs to that machine.
    for (const user of [spec.acl.chapUser, spec.acl.mutualUser]) {
      if (!user) continue;
      if (user === TGT_GUARD_USER)
        throw new TargetError(iqn, `CHAP user ${user} is reserved for the tgt driver's guard`);
      const owner = targets.find(
        (t) => t.iqn !== iqn && (t.incomingUsers.includes(user) || t.outgoingUsers.includes(user)),
      );
      if (owner) throw new TargetError(iqn, `CHAP user ${user} is already used by ${owner.iqn}`);
    }

    await this.#ensurePortal(iqn, spec.portal, portals, changes);

    if (!existing) {
      const tid = freeTid(targets);
      await tgtadm(["--op", "new", "--mode", "target", "--tid", `${tid}`, "--targetname", iqn]);
      try {
        for (const l of spec.luns) await this.#addLun(iqn, tid, l, secrets);
        await this.#setAccounts(iqn, tid, spec, [], [], secrets);
        // Bound last: until then no initiator is allowed in, so nobody logs in without CHAP.
        await this.#bindAcl(iqn, tid, spec, [], secrets);
      } catch (err) {
        await this.#tgtadm(iqn, ["--op", "delete", "--mode", "target", "--tid", `${tid}`], secrets)
          .then(() => undefined)
          .catch((cleanupErr: unknown) =>
            this.#o.logger.error(
              { iqn, tid, err: String(cleanupErr) },
              "could not remove half-created tgt target",
            ),
          );
        throw err;
      }
      changes.push(`created tid ${tid} with luns ${spec.luns.map((l) => l.lun).join(",")}`);
      this.#made.set(iqn, madeTarget(spec, tid));
    } else {
      const tid = existing.tid;
      const wanted = new Map(spec.luns.map((l) => [l.lun, l]));
      for (const cur of existing.luns) {
        if (cur.lun === 0) continue;
        const want = wanted.get(cur.lun);
        if (!want || want.path !== cur.backingStorePath) {
          await tgtadm([
            "--op",
            "delete",
            "--mode",
            "logicalunit",
            "--tid",
            `${tid}`,
            "--lun",
            `${cur.lun}`,
          ]);
          changes.push(`removed lun ${cur.lun}`);
        }
      }
      for (const l of spec.luns) {
        const cur = existing.luns.find((x) => x.lun === l.lun);
        if (!cur || cur.backingStorePath !== l.path) {
          await this.#addLun(iqn, tid, l, secrets);
          changes.push(`added lun ${l.lun}`);
        } else if (cur.readOnly !== l.readOnly || cur.scsiSn !== l.wwn || cur.scsiId !== l.wwn) {
          await tgtadm(lunParams(tid, l));
          changes.push(`updated lun ${l.lun}`);
        }
      }

      const wantOut = spec.acl.mutualUser ? [spec.acl.mutualUser] : [];
      const accountsDiffer =
        !sameSet(machineUsers(existing), [spec.acl.chapUser]) ||
        !sameSet(existing.outgoingUsers, wantOut) ||
        !storedSecretsMatch(stored, spec);
      const aclDiffers = !sameSet(existing.acl, wantedAcl(spec));
      if (!guarded(existing)) {
        // No guard in the first slot (class comment): the accounts are bound again, guard
        // first, and there is a moment with none bound, when tgt lets anyone in: close the
        // ACL first. Logged-in sessions are not affected. Unbound from the last slot so
        // that no empty slot is left before a bound one.
        for (const entry of existing.acl) await this.#unbindAcl(iqn, tid, entry, secrets);
        for (const user of [...existing.incomingUsers].reverse())
          await this.#tgtadm(
            iqn,
            ["--op", "unbind", "--mode", "account", "--tid", `${tid}`, "--user", user],
            secrets,
          );
        await this.#setAccounts(iqn, tid, spec, [], existing.outgoingUsers, secrets, stored);
        await this.#bindAcl(iqn, tid, spec, [], secrets);
        changes.push("bound the guard account");
      } else if (accountsDiffer) {
        // The guard stays bound: CHAP is required all along, no ACL change needed.
        await this.#setAccounts(
          iqn,
          tid,
          spec,
          existing.incomingUsers,
          existing.outgoingUsers,
          secrets,
          stored,
        );
        changes.push("updated accounts");
      }
      if (guarded(existing) && aclDiffers) {
        await this.#bindAcl(iqn, tid, spec, existing.acl, secrets);
        for (const entry of existing.acl)
          if (!wantedAcl(spec).includes(entry)) await this.#unbindAcl(iqn, tid, entry, secrets);
      }
      if (aclDiffers) changes.push(`acl set to ${spec.acl.initiatorIqn}`);
      this.#made.set(iqn, madeTarget(spec, tid));
    }
    return changes;
  }

  /** tgtd's side of remove; whether the target was running. */
  async #remove(iqn: string, options: RemoveOptions): Promise<boolean> {
    const targets = await this.#showTargets(iqn);
    const t = targets.find((x) => x.iqn === iqn);
    if (t) {
      if (t.nexuses.length > 0 && !options.force) {
        const who = t.nexuses.map((n) => n.initiator).join(", ");
        throw new TargetError(iqn, `has logged-in sessions (${who}); not removing without force`);
      }
      const del = ["--op", "delete", "--mode", "target", "--tid", `${t.tid}`];
      if (options.force) del.push("--force");
      await this.#tgtadm(iqn, del, []);
      // Accounts are global in tgt; these were this machine's alone (apply refuses sharing).
      const stillUsed = new Set(
        targets
          .filter((x) => x.iqn !== iqn)
          .flatMap((x) => [...x.incomingUsers, ...x.outgoingUsers]),
      );
      for (const user of [...t.incomingUsers, ...t.outgoingUsers]) {
        // The guard stays for every other target and the next (no target leaves it unused).
        if (!stillUsed.has(user) && user !== TGT_GUARD_USER)
          await this.#tgtadm(iqn, ["--op", "delete", "--mode", "account", "--user", user], []);
      }
    }
    // Its spare and its retired account, bound nowhere: this target's alone.
    for (const user of this.#spares.forget(iqn)) await this.#deleteAccount(iqn, user);
    return t !== undefined;
  }

  async #addLun(iqn: string, tid: number, l: TargetSpec["luns"][number], secrets: string[]) {
    await this.#tgtadm(
      iqn,
      [
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        `${tid}`,
        "--lun",
        `${l.lun}`,
        "--backing-store",
        l.path,
      ],
      secrets,
    );
    // tgtadm takes no parameters when a unit is created, only afterwards.
    await this.#tgtadm(iqn, lunParams(tid, l), secrets);
  }

  /**
   * Binds the guard (when `incoming`, the incoming users bound now in slot order, lacks
   * it: first, so it takes slot 0) and the spec's accounts; unbinds any other.
   */
  async #setAccounts(
    iqn: string,
    tid: number,
    spec: TargetSpec,
    incoming: readonly string[],
    outgoing: readonly string[],
    secrets: string[],
    stored?: TgtConfView,
  ): Promise<void> {
    const tgtadm = (args: string[]) => this.#tgtadm(iqn, args, secrets);
    const want: { user: string; password: string; outgoing: boolean }[] = [
      { user: spec.acl.chapUser, password: spec.acl.chapPassword, outgoing: false },
    ];
    if (spec.acl.mutualUser && spec.acl.mutualPassword)
      want.push({ user: spec.acl.mutualUser, password: spec.acl.mutualPassword, outgoing: true });
    const isBound = (w: (typeof want)[number]) =>
      w.outgoing ? outgoing.includes(w.user) : incoming.includes(w.user);
    // A bound account exists: tgtd's account listing is read only when one is not bound,
    // not for a boot's new secret (one request fewer in tgtd's queue per boot).
    // A copy: the listing is shared with other applies, and this one edits what it holds.
    const accounts = want.every(isBound)
      ? want.map((w) => w.user)
      : [...(await this.#showAccounts(iqn))];

    if (!incoming.includes(TGT_GUARD_USER))
      await tgtadm([
        "--op",
        "bind",
        "--mode",
        "account",
        "--tid",
        `${tid}`,
        "--user",
        TGT_GUARD_USER,
      ]);
    // From the last slot: tgt must not be left with an empty slot before a bound account.
    for (const user of [...incoming].reverse()) {
      if (user !== TGT_GUARD_USER && !want.some((w) => !w.outgoing && w.user === user))
        await tgtadm(["--op", "unbind", "--mode", "account", "--tid", `${tid}`, "--user", user]);
    }
    for (const user of outgoing) {
      if (!want.some((w) => w.outgoing && w.user === user))
        await tgtadm([
          "--op",
          "unbind",
          "--mode",
          "account",
          "--tid",
          `${tid}`,
          "--user",
          user,
          "--outgoing",
        ]);
    }
    for (const w of want) {
      const known = [...(stored?.incoming ?? []), ...(stored?.outgoing ?? [])].find(
        (a) => a.user === w.user,
      );
      let bound = isBound(w);
      if (accounts.includes(w.user) && known?.password !== w.password) {
        // tgtadm cannot change a password: delete (which also unbinds) and create again.
        // The machine's account is in the last slot (the guard's is first): no empty slot.
        await tgtadm(["--op", "delete", "--mode", "account", "--user", w.user]);
        bound = false;
        accounts.splice(accounts.indexOf(w.user), 1);
      }
      if (!accounts.includes(w.user)) await this.#newAccount(iqn, w.user, w.password);
      if (!bound) {
        const args = ["--op", "bind", "--mode", "account", "--tid", `${tid}`, "--user", w.user];
        if (w.outgoing) args.push("--outgoing");
        await tgtadm(args);
      }
    }
  }

  /** Binds what the ACL lacks: the same two entries tgt-admin makes of the config file. */
  async #bindAcl(
    iqn: string,
    tid: number,
    spec: TargetSpec,
    have: readonly string[],
    secrets: string[],
  ): Promise<void> {
    const base = ["--op", "bind", "--mode", "target", "--tid", `${tid}`];
    if (!have.includes(TGT_NO_ADDRESS))
      await this.#tgtadm(iqn, [...base, "--initiator-address", TGT_NO_ADDRESS], secrets);
    if (!have.includes(spec.acl.initiatorIqn))
      await this.#tgtadm(iqn, [...base, "--initiator-name", spec.acl.initiatorIqn], secrets);
  }

  async #unbindAcl(iqn: string, tid: number, entry: string, secrets: string[]): Promise<void> {
    // tgtadm lists initiator names and addresses in one list; only one of these applies.
    // The likelier one first: every CHAP change unbinds the 0.0.0.0 entry, and a failed
    // try is one more round trip in the queue all targets share.
    const kinds =
      entry === TGT_NO_ADDRESS || isIP(entry) !== 0
        ? ["--initiator-address", "--initiator-name"]
        : ["--initiator-name", "--initiator-address"];
    const unbind = (kind: string) =>
      this.#tgtadm(
        iqn,
        ["--op", "unbind", "--mode", "target", "--tid", `${tid}`, kind, entry],
        secrets,
      );
    try {
      await unbind(kinds[0]!);
    } catch {
      await unbind(kinds[1]!);
    }
  }

  async #ensurePortal(
    iqn: string,
    portal: TargetSpec["portal"],
    portals: readonly TgtPortalView[],
    changes: string[],
  ) {
    if (portalCovered(portal, portals)) return;
    // tgt's portals belong to the whole daemon, not to one target: added, never removed here.
    const host = portal.address.includes(":") ? `[${portal.address}]` : portal.address;
    await this.#tgtadm(
      iqn,
      ["--op", "new", "--mode", "portal", "--param", `portal=${host}:${portal.port}`],
      [],
    );
    changes.push(`added portal ${host}:${portal.port}`);
  }

  /**
   * The target's config file as this driver last wrote or read it; read from disk the
   * first time (a file is this driver's alone: nothing else writes it).
   */
  async #confText(iqn: string): Promise<string | undefined> {
    const known = this.#confTexts.get(iqn);
    if (known !== undefined) return known;
    const text = await readFile(join(this.#o.confDir, tgtConfFileName(iqn)), "utf8").catch(
      () => undefined,
    );
    if (text !== undefined) this.#confTexts.set(iqn, text);
    return text;
  }

  /** tgtd's target listing, shared with whoever asks at the same time: not to be edited. */
  #showTargets(iqn: string): Promise<readonly TgtTargetView[]> {
    return this.#shown(iqn, this.#targetListing);
  }

  #showPortals(iqn: string): Promise<readonly TgtPortalView[]> {
    return this.#shown(iqn, this.#portalListing);
  }

  #showAccounts(iqn: string): Promise<readonly string[]> {
    return this.#shown(iqn, this.#accountListing);
  }

  /** A listing, parsed; a failure names the target whose change needed it. */
  async #shown<T>(iqn: string, listing: CoalescedRead<Listing<T>>): Promise<T> {
    const got = await listing.get();
    if ("failed" in got) throw new TargetError(iqn, got.failed);
    return got.parsed;
  }

  /**
   * One `show` request, parsed once for everyone who shares it (in a 500-PC storm each of
   * a round's askers parsed the same target listing again: 10% of the daemon's CPU). Its
   * failure is kept as text for #shown to put on each asker.
   */
  async #readListing<T>(
    mode: "target" | "portal" | "account",
    parse: (text: string) => T,
  ): Promise<Listing<T>> {
    let text: string;
    try {
      text = (await this.#request(["--op", "show", "--mode", mode], [])).stdout;
    } catch (err) {
      return { failed: errorText(err) };
    }
    return { parsed: parse(text) };
  }

  /**
   * Makes the guard account unless tgtd has it (an earlier run's is kept: class comment).
   * Under the exclusive lock: accounts are tgtd-wide.
   */
  async #ensureGuard(iqn: string): Promise<void> {
    if ((await this.#showAccounts(iqn)).includes(TGT_GUARD_USER)) return;
    await this.#newAccount(iqn, TGT_GUARD_USER, this.#guardSecret);
    this.#o.logger.info({ user: TGT_GUARD_USER }, "tgt guard account made");
  }

  /** The one request with a secret: on the socket only, never in a log or an error. */
  async #newAccount(iqn: string, user: string, password: string): Promise<void> {
    await this.#tgtadm(
      iqn,
      ["--op", "new", "--mode", "account", "--user", user, "--password", password],
      [password],
    );
  }

  async #tgtadm(iqn: string, args: string[], secrets: readonly string[]): Promise<void> {
    await this.#tgtadmOut(iqn, args, secrets);
  }

  /** One management request for a target; an error names the target too. */
  async #tgtadmOut(iqn: string, args: string[], secrets: readonly string[]) {
    try {
      return await this.#request(args, secrets);
    } catch (err) {
      throw new TargetError(iqn, errorText(err));
    }
  }

  /** One management request; an error names the tgtadm command it stands for and why. */
  async #request(args: string[], secrets: readonly string[]): Promise<{ stdout: string }> {
    let answer: Awaited<ReturnType<TgtdManager>>;
    try {
      answer = await this.#o.manage(args);
    } catch (err) {
      throw new Error(
        `${describeCommand("tgtadm", args, secrets)}: ${redact(errorText(err), secrets)}`,
      );
    }
    if (answer.code !== 0) {
      throw new Error(
        `${describeCommand("tgtadm", args, secrets)} failed: ${tgtdErrorText(answer.code)}`,
      );
    }
    return { stdout: answer.text };
  }
}

function sessionsOf(t: TgtTargetView): TargetSession[] {
  return t.nexuses.map((n) =>
    n.addresses[0] === undefined
      ? { initiatorIqn: n.initiator }
      : { initiatorIqn: n.initiator, address: n.addresses[0] },
  );
}

/** A listing as every asker of one read shares it: read-only, never to be edited. */
type Listing<T> = { parsed: T } | { failed: string };

/** A target as this driver made it in tgtd (TgtDriver.#made). */
interface MadeTarget {
  tid: number;
  /** shapeOf the spec it was made from: a spec of another shape takes the full path. */
  shape: string;
  /** The machine's incoming account, bound after the guard. */
  user: string;
  outgoing: string[];
}

function madeTarget(spec: TargetSpec, tid: number): MadeTarget {
  return {
    tid,
    shape: shapeOf(spec),
    user: spec.acl.chapUser,
    outgoing: spec.acl.mutualUser ? [spec.acl.mutualUser] : [],
  };
}

/**
 * Everything of a spec but its secrets; with `chapUser`, as if its incoming user were that
 * one (a boot taking the spare changes only the user's name and secret).
 */
function shapeOf(spec: TargetSpec, chapUser = spec.acl.chapUser): string {
  const { chapPassword: _c, mutualPassword: _m, ...acl } = spec.acl;
  return JSON.stringify([spec.portal, spec.luns, { ...acl, chapUser }]);
}

/**
 * Whether a target gets spare accounts: not with mutual CHAP, whose outgoing account is
 * deleted and made again each boot anyway.
 */
function takesSpare(made: MadeTarget): boolean {
  return made.outgoing.length === 0;
}

/** The change a boot that took the target's spare logs. */
const SWAPPED = "bound the spare account";

function portalCovered(portal: TargetSpec["portal"], portals: readonly TgtPortalView[]): boolean {
  return portals.some(
    (p) => p.port === portal.port && (p.address === portal.address || WILDCARDS.has(p.address)),
  );
}

/**
 * Whether applying `spec` touches only its own target in tgtd: the target exists, its
 * portal is there, and it keeps the account names it has (a new password for the same name
 * is deleted and made again under that name, which no other target holds). Creating a
 * target takes a free tid, adding a portal or moving a name changes what every target
 * shares: those run alone.
 */
function confinedToTarget(
  spec: TargetSpec,
  targets: readonly TgtTargetView[],
  portals: readonly TgtPortalView[],
): boolean {
  const existing = targets.find((t) => t.iqn === spec.iqn);
  if (!existing || !portalCovered(spec.portal, portals)) return false;
  const wantOut = spec.acl.mutualUser ? [spec.acl.mutualUser] : [];
  return (
    sameSet(machineUsers(existing), [spec.acl.chapUser]) && sameSet(existing.outgoingUsers, wantOut)
  );
}

/** The target's incoming users but the guard: the machine's own. */
function machineUsers(t: TgtTargetView): string[] {
  return t.incomingUsers.filter((u) => u !== TGT_GUARD_USER);
}

/**
 * Whether the guard is in tgt's first account slot with at most the machine's account
 * after it: then deleting that account leaves no empty slot before a bound one.
 */
function guarded(t: TgtTargetView): boolean {
  return t.incomingUsers[0] === TGT_GUARD_USER && t.incomingUsers.length <= 2;
}

function freeTid(targets: readonly TgtTargetView[]): number {
  const used = new Set(targets.map((t) => t.tid));
  let tid = 1;
  while (used.has(tid)) tid++;
  return tid;
}

function wantedAcl(spec: TargetSpec): string[] {
  return [TGT_NO_ADDRESS, spec.acl.initiatorIqn];
}

function lunParams(tid: number, l: TargetSpec["luns"][number]): string[] {
  // scsi_id too: tgt's default id is derived from the tid, which differs after a restart.
  const params = `readonly=${l.readOnly ? 1 : 0},scsi_sn=${l.wwn},scsi_id=${l.wwn}`;
  return [
    "--op",
    "update",
    "--mode",
    "logicalunit",
    "--tid",
    `${tid}`,
    "--lun",
    `${l.lun}`,
    "--params",
    params,
  ];
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

function storedSecretsMatch(stored: TgtConfView | undefined, spec: TargetSpec): boolean {
  if (!stored) return false;
  const inc = stored.incoming.find((a) => a.user === spec.acl.chapUser);
  if (inc?.password !== spec.acl.chapPassword) return false;
  if (!spec.acl.mutualUser) return true;
  const out = stored.outgoing.find((a) => a.user === spec.acl.mutualUser);
  return out?.password === spec.acl.mutualPassword;
}
