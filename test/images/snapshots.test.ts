import { mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { findOrphans } from "../../src/diskspace/cleanup.js";
import { EventBus } from "../../src/events/bus.js";
import { SnapshotService } from "../../src/images/snapshots.js";
import { VersionError } from "../../src/images/version-errors.js";
import {
  VERSION_RETENTION_JOB,
  VersionService,
  type VersionStorage,
} from "../../src/images/versions.js";
import { JobRunner } from "../../src/jobs/runner.js";
import type { Target } from "../../src/store/targets.js";
import { silent, tempStore } from "../jobs/helpers.js";

/**
 * Writeback snapshots, promote and pin, on the real store (migrations, triggers) with the
 * disk side recorded: which machines are "running" is the test's to say.
 */
function setup(t: Test, opts: { keep?: number } = {}) {
  const { store, beforeClose } = tempStore(t, "snapshots");
  const bus = new EventBus();
  const events: string[] = [];
  bus.on((e) => {
    if (e.type === "image_version_changed") events.push(e.payload.action);
  });
  const runner = new JobRunner({ store, bus, log: silent });
  beforeClose(() => runner.stop(10_000));
  const calls: string[] = [];
  const live = new Set<number>();
  const liveRefusal = (targetId: number) => {
    const tg = store.targets.get(targetId)!;
    if (!live.has(tg.machine_id)) return;
    const name = store.machines.get(tg.machine_id)!.name;
    throw new VersionError(
      "live_session",
      `machine ${name} has a live iSCSI session (sess-1): shut it down first`,
      { machine_id: tg.machine_id, session_id: "sess-1" },
    );
  };
  const storage: VersionStorage = {
    freeze: async (_draft, name) => ({ path: `/images/${name}.raw`, sizeBytes: 1 }),
    deleteDraft: async () => {},
    deleteVersion: async (path) => {
      calls.push(`deleteVersion ${path}`);
    },
    isLive: async (target: Target) => live.has(target.machine_id),
    resetTarget: async () => {},
    retarget: async () => {},
    cloneOverlay: async (targetId, name, refuseLive) => {
      if (refuseLive) liveRefusal(targetId);
      calls.push(`clone t${targetId} ${name}${refuseLive ? " refuseLive" : ""}`);
      return { path: `/images/${name}.raw`, sizeBytes: 4321 };
    },
    restoreOverlay: async (targetId, path, version) => {
      liveRefusal(targetId);
      calls.push(`restore t${targetId} ${path} v${version}`);
      store.targets.update(targetId, { overlay_version: version });
    },
    collectGarbage: async () => {
      for (const g of store.storageGarbage.pending()) {
        calls.push(`collect ${g.path}`);
        store.storageGarbage.done(g.id);
      }
    },
  };
  const reserve = { ok: true };
  const checkReserve = async () =>
    reserve.ok ? { ok: true } : { ok: false, reason: "1.0 GiB free, 5% kept free" };
  const versions = new VersionService({
    store,
    log: silent,
    runner,
    bus,
    keepVersions: opts.keep ?? 5,
    reserve: checkReserve,
  });
  versions.attach(storage);
  const snapshots = new SnapshotService({ store, log: silent, versions, reserve: checkReserve });
  const image = store.images.create({ name: "Win11", filename: "w.raw", status: "ready" });
  store.images.addVersion(image.id, { path: "/images/v1.raw", note: "imported" });
  const machine = (name: string, mac: string, policy: "persistent" | "reset") => {
    const m = store.machines.create({ name, mac_address: mac, overlay_policy: policy });
    const target = store.targets.create({
      name: `${name}-t`,
      iqn: `iqn.2024-01.test:${name}`,
      portal_ip: "10.0.0.1",
      machine_id: m.id,
      system_image_id: image.id,
      initiator_iqn: `iqn.2024-01.test:c-${name}`,
      chap_username: `u-${name}`,
      chap_password: "Secret0123456789",
      overlay_version: 1,
    });
    return { machine: m, target };
  };
  const admin = store.users.create({ username: "admin", role: "admin", password_hash: "x" });
  const pcA = machine("pc-a", "52:54:00:00:00:01", "persistent");
  const pcB = machine("pc-b", "52:54:00:00:00:02", "reset");
  return {
    store,
    runner,
    versions,
    snapshots,
    image,
    pcA,
    pcB,
    admin,
    reserve,
    events,
    calls,
    live,
  };
}

async function refused(t: Test, p: Promise<unknown>, code: string, detail: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof VersionError, `refused with a VersionError (${String(err)})`);
  t.equal((err as VersionError).code, code, `code ${code}`);
  t.match((err as VersionError).message, detail, "the error names why");
}

t.test("taking a snapshot: refused where it must be, then a clone with a row", async (t) => {
  const s = setup(t);
  await refused(t, s.snapshots.take(999, "", null), "not_found", /no target 999/);
  await refused(
    t,
    s.snapshots.take(s.pcB.target.id, "x", null),
    "reset_policy",
    /pc-b resets its overlay at every boot \(overlay_policy reset\)/,
  );
  s.store.targets.update(s.pcA.target.id, { overlay_version: null });
  await refused(
    t,
    s.snapshots.take(s.pcA.target.id, "x", null),
    "no_writeback",
    /pc-a-t has no overlay yet/,
  );
  s.store.targets.update(s.pcA.target.id, { overlay_version: 1 });
  const u = await s.versions.openUpdate(s.image.id, { machine_id: s.pcA.machine.id }, null);
  await refused(
    t,
    s.snapshots.take(s.pcA.target.id, "x", null),
    "update_open",
    new RegExp(`pc-a is the super-client of open update ${u.id}`),
  );
  await s.versions.discard(s.image.id, u.id);
  s.reserve.ok = false;
  await refused(
    t,
    s.snapshots.take(s.pcA.target.id, "x", null),
    "insufficient_space",
    /snapshot is refused: 1.0 GiB free/,
  );
  s.reserve.ok = true;
  t.same(s.calls, [], "no refused request cloned anything");

  // Taken while the machine runs: crash-consistent, allowed (never refuseLive).
  s.live.add(s.pcA.machine.id);
  const snap = await s.snapshots.take(s.pcA.target.id, "before the driver update", s.admin.id);
  t.match(snap, {
    target_id: s.pcA.target.id,
    image_id: s.image.id,
    image_version: 1,
    comment: "before the driver update",
    size_bytes: 4321,
    created_by_username: "admin",
  });
  t.match(
    s.calls[0],
    new RegExp(`^clone t${s.pcA.target.id} snap-t${s.pcA.target.id}-[0-9a-f]{8}$`),
  );
  t.same(
    s.snapshots.list(s.pcA.target.id).map((x) => x.id),
    [snap.id],
  );
  t.same(s.events, ["update_opened", "update_discarded", "snapshot_taken"]);
});

t.test(
  "restore: refused with a live session (named), another target's, another image's",
  async (t) => {
    const s = setup(t);
    const snap = await s.snapshots.take(s.pcA.target.id, "v1 state", null);
    s.store.images.addVersion(s.image.id, { path: "/images/v2.raw" });
    s.store.targets.update(s.pcA.target.id, { overlay_version: 2 });
    s.live.add(s.pcA.machine.id);
    await refused(
      t,
      s.snapshots.restore(s.pcA.target.id, snap.id),
      "live_session",
      /pc-a has a live iSCSI session \(sess-1\)/,
    );
    s.live.clear();
    await refused(
      t,
      s.snapshots.restore(s.pcB.target.id, snap.id),
      "not_found",
      new RegExp(`pc-b-t has no snapshot ${snap.id}`),
    );
    const other = s.store.images.create({ name: "Linux", filename: "l.raw", status: "ready" });
    s.store.targets.update(s.pcA.target.id, { system_image_id: other.id });
    await refused(
      t,
      s.snapshots.restore(s.pcA.target.id, snap.id),
      "snapshot_mismatch",
      new RegExp(
        `snapshot ${snap.id} is of image ${s.image.id}, but target pc-a-t boots image ${other.id}`,
      ),
    );
    s.store.targets.update(s.pcA.target.id, { system_image_id: s.image.id });
    s.store.machines.update(s.pcA.machine.id, { overlay_policy: "reset" });
    await refused(
      t,
      s.snapshots.restore(s.pcA.target.id, snap.id),
      "reset_policy",
      /restored disk would be thrown away at its next boot/,
    );
    s.store.machines.update(s.pcA.machine.id, { overlay_policy: "persistent" });
    const after = await s.snapshots.restore(s.pcA.target.id, snap.id);
    t.equal(after.overlay_version, 1, "the target rests on the snapshot's version again");
    t.equal(s.calls.at(-1), `restore t${s.pcA.target.id} ${snap.path} v1`);
    t.equal(s.events.at(-1), "snapshot_restored");
  },
);

t.test("a snapshot's file follows its row: delete, target deleted, machine deleted", async (t) => {
  const s = setup(t);
  const a = await s.snapshots.take(s.pcA.target.id, "a", null);
  const b = await s.snapshots.take(s.pcA.target.id, "b", null);
  await s.snapshots.delete(s.pcA.target.id, a.id);
  t.same(
    s.calls.filter((c) => c.startsWith("collect")),
    [`collect ${a.path}`],
  );
  t.same(s.store.storageGarbage.pending(), [], "collected");
  await refused(t, s.snapshots.delete(s.pcA.target.id, a.id), "not_found", /no snapshot/);

  // The target goes: the trigger queues the remaining snapshot's file.
  s.store.targets.delete(s.pcA.target.id);
  t.same(
    s.store.storageGarbage.pending().map((g) => [g.path, g.reason]),
    [[b.path, `snapshot ${b.id} of target ${s.pcA.target.id}`]],
  );
  // And a machine's deletion cascades through its target to its snapshots.
  const c = s.store.targets.create({
    name: "again",
    iqn: "iqn.2024-01.test:again",
    portal_ip: "10.0.0.1",
    machine_id: s.pcA.machine.id,
    system_image_id: s.image.id,
    initiator_iqn: "iqn.2024-01.test:c-again",
    chap_username: "u-again",
    chap_password: "Secret0123456789",
    overlay_version: 1,
  });
  const snapC = await s.snapshots.take(c.id, "c", null);
  s.store.machines.delete(s.pcA.machine.id);
  t.same(
    s.store.storageGarbage.pending().map((g) => g.path),
    [b.path, snapC.path],
    "every file of the machine's snapshots is queued",
  );
});

t.test("promote: refused while running, on a reset machine, with an open update", async (t) => {
  const s = setup(t);
  s.live.add(s.pcA.machine.id);
  await refused(
    t,
    s.versions.promote(s.pcA.target.id, { comment: "x" }, null),
    "live_session",
    /machine pc-a is running .*promote: a writeback being written is not a consistent image/,
  );
  s.live.clear();
  await refused(
    t,
    s.versions.promote(s.pcB.target.id, { comment: "x" }, null),
    "reset_policy",
    /cannot promote: machine pc-b resets its overlay/,
  );
  const u = await s.versions.openUpdate(s.image.id, { machine_id: s.pcB.machine.id }, null);
  await refused(
    t,
    s.versions.promote(s.pcA.target.id, { comment: "x" }, null),
    "update_open",
    new RegExp(`open update ${u.id} on machine pc-b: commit or discard it before a promote`),
  );
  await s.versions.discard(s.image.id, u.id);
  s.reserve.ok = false;
  await refused(
    t,
    s.versions.promote(s.pcA.target.id, { comment: "x" }, null),
    "insufficient_space",
    /new version is refused/,
  );
  s.reserve.ok = true;
  t.same(s.calls, [], "nothing was cloned by a refused promote");

  const v2 = await s.versions.promote(s.pcA.target.id, { comment: "pc-a's state" }, s.admin.id);
  t.match(v2, { version: 2, note: "pc-a's state", created_by: s.admin.id, size_bytes: 4321 });
  t.match(
    s.calls[0],
    new RegExp(`^clone t${s.pcA.target.id} img${s.image.id}-v2-[0-9a-f]{8} refuseLive$`),
  );
  t.equal(s.store.images.get(s.image.id)?.current_version, 2, "current by default");
  t.equal(s.store.targets.get(s.pcA.target.id)?.overlay_version, 2, "pc-a is on it, not behind");

  const v3 = await s.versions.promote(
    s.pcA.target.id,
    { comment: "staged", make_current: false },
    null,
  );
  t.equal(v3.version, 3);
  t.equal(s.store.images.get(s.image.id)?.current_version, 2, "make_current false: 2 stays");
  t.same(s.events.slice(-2), ["promoted", "promoted"]);
});

t.test("pin: only to an existing version; retention keeps pinned and snapshotted", async (t) => {
  const s = setup(t, { keep: 1 });
  for (let i = 2; i <= 5; i++) s.store.images.addVersion(s.image.id, { path: `/images/v${i}.raw` });
  await refused(
    t,
    s.versions.pin(s.pcB.target.id, 9),
    "invalid_reference",
    /pinned_version: image Win11 has no version 9 \(versions: 1, 2, 3, 4, 5\)/,
  );
  await refused(t, s.versions.pin(999, 1), "not_found", /no target 999/);
  const pinned = await s.versions.pin(s.pcB.target.id, 2);
  t.equal(pinned.system_image_version, 2);
  // pc-a's overlay moves to v5 after a snapshot on v3: v3 is kept for the snapshot only.
  s.store.targets.update(s.pcA.target.id, { overlay_version: 3 });
  await s.snapshots.take(s.pcA.target.id, "on v3", null);
  s.store.targets.update(s.pcA.target.id, { overlay_version: 5 });
  s.store.targets.update(s.pcB.target.id, { overlay_version: 5 });
  t.equal(s.store.imageVersions.get(s.image.id, 3)?.in_use_by, 1, "the snapshot uses v3");
  const job = s.runner.submit(VERSION_RETENTION_JOB, {});
  const done = await s.runner.wait(job.id, 10_000);
  t.equal(done.status, "succeeded", done.error ?? "");
  t.same(
    s.store.images.versions(s.image.id).map((v) => v.version),
    [2, 3, 5],
    "1 and 4 deleted; 2 pinned, 3 under a snapshot, 5 current",
  );
  const unpinned = await s.versions.pin(s.pcB.target.id, null);
  t.equal(unpinned.system_image_version, null, "follows the current version again");
  t.same(
    s.events.filter((e) => e.includes("pin")),
    ["pinned", "unpinned"],
  );
});

t.test(
  "storage clean-up: a snapshot file without a row is an orphan, one with a row is not",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), `bf-snap-orphans-${process.pid}-`));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const kept = join(dir, "snap-t1-0a1b2c3d.raw");
    const lost = join(dir, "snap-t2-deadbeef.raw");
    const old = new Date(Date.now() - 2 * 3600_000);
    for (const p of [kept, lost]) {
      writeFileSync(p, "x");
      utimesSync(p, old, old);
    }
    const orphans = await findOrphans({
      imagesDir: dir,
      referencedImageFiles: () => new Set([kept]),
    });
    t.same(
      orphans.map((o) => [o.path, o.reason]),
      [[lost, "unreferenced snapshot file"]],
    );
  },
);
