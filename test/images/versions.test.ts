import t, { type Test } from "tap";
import { EventBus } from "../../src/events/bus.js";
import { VersionError } from "../../src/images/version-errors.js";
import {
  retentionPlan,
  VERSION_RETENTION_JOB,
  VersionService,
  type VersionStorage,
} from "../../src/images/versions.js";
import { selectSystemDisk, versionsBehind } from "../../src/iscsi/version-selection.js";
import { JobRunner } from "../../src/jobs/runner.js";
import type { Target } from "../../src/store/targets.js";
import { silent, tempStore } from "../jobs/helpers.js";

/** The disk side, recorded: which machines are "running" is the test's to say. */
function fakeStorage() {
  const calls: string[] = [];
  const live = new Set<number>();
  const storage: VersionStorage = {
    freeze: async (draft, name) => {
      calls.push(`freeze ${draft} ${name}`);
      return { path: `/images/${name}.raw`, sizeBytes: 1234 };
    },
    deleteDraft: async (draft) => {
      calls.push(`deleteDraft ${draft}`);
    },
    deleteVersion: async (path) => {
      calls.push(`deleteVersion ${path}`);
    },
    isLive: async (target: Target) => live.has(target.machine_id),
    resetTarget: async (targetId) => {
      calls.push(`reset ${targetId}`);
    },
    retarget: async (machineId) => {
      calls.push(`retarget ${machineId}`);
    },
    cloneOverlay: async (targetId, name, refuseLive) => {
      calls.push(`clone t${targetId} ${name}${refuseLive ? " refuseLive" : ""}`);
      return { path: `/images/${name}.raw`, sizeBytes: 4321 };
    },
    restoreOverlay: async (targetId, path, version) => {
      calls.push(`restore t${targetId} ${path} v${version}`);
    },
    collectGarbage: async () => {
      calls.push("collectGarbage");
    },
  };
  return { storage, calls, live };
}

function setup(
  t: Parameters<typeof tempStore>[0],
  opts: { keep?: number; reserveOk?: boolean } = {},
) {
  const { store, beforeClose } = tempStore(t, "versions");
  const bus = new EventBus();
  const events: string[] = [];
  bus.on((e) => {
    if (e.type === "image_version_changed") events.push(e.payload.action);
  });
  const runner = new JobRunner({ store, bus, log: silent });
  beforeClose(() => runner.stop(10_000));
  const reserve = { ok: opts.reserveOk ?? true };
  const versions = new VersionService({
    store,
    log: silent,
    runner,
    bus,
    keepVersions: opts.keep ?? 5,
    reserve: async () =>
      reserve.ok ? { ok: true } : { ok: false, reason: "1.0 GiB free, 5% kept free" },
  });
  const disk = fakeStorage();
  versions.attach(disk.storage);
  const image = store.images.create({ name: "Win11", filename: "w.raw", status: "ready" });
  store.images.addVersion(image.id, { path: "/images/v1.raw", note: "imported" });
  const machine = (name: string, mac: string) => {
    const m = store.machines.create({ name, mac_address: mac });
    const target = store.targets.create({
      name: `${name}-t`,
      iqn: `iqn.2024-01.test:${name}`,
      portal_ip: "10.0.0.1",
      machine_id: m.id,
      system_image_id: image.id,
      initiator_iqn: `iqn.2024-01.test:c-${name}`,
      chap_username: `u-${name}`,
      chap_password: "Secret0123456789",
    });
    return { machine: m, target };
  };
  const admin = store.users.create({ username: "admin", role: "admin", password_hash: "x" });
  const superPc = machine("super", "52:54:00:00:00:01");
  const pcB = machine("pc-b", "52:54:00:00:00:02");
  return { store, runner, versions, image, superPc, pcB, admin, reserve, events, ...disk };
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

t.test("opening an update: refused where it must be", async (t) => {
  const s = setup(t);
  await refused(
    t,
    s.versions.openUpdate(s.image.id, { machine_id: 999 }, null),
    "invalid_reference",
    /machine_id: no machine 999/,
  );
  const other = s.store.machines.create({ name: "stranger", mac_address: "52:54:00:00:00:09" });
  await refused(
    t,
    s.versions.openUpdate(s.image.id, { machine_id: other.id }, null),
    "machine_not_on_image",
    /stranger does not boot image Win11/,
  );
  const importing = s.store.images.create({ name: "New", filename: "n", status: "processing" });
  await refused(
    t,
    s.versions.openUpdate(importing.id, { machine_id: s.superPc.machine.id }, null),
    "not_ready",
    /New is processing/,
  );
  const u = await s.versions.openUpdate(
    s.image.id,
    { machine_id: s.superPc.machine.id, comment: "kb" },
    s.admin.id,
  );
  t.match(u, { status: "open", base_version: 1, draft_overlay: `u${u.id}-draft`, comment: "kb" });
  await refused(
    t,
    s.versions.openUpdate(s.image.id, { machine_id: s.pcB.machine.id }, null),
    "update_open",
    new RegExp(`open update ${u.id} on machine super`),
  );
  t.same(s.events, ["update_opened"]);
});

t.test(
  "commit: refused without a booted draft, with a live session, below the reserve",
  async (t) => {
    const s = setup(t);
    const u = await s.versions.openUpdate(s.image.id, { machine_id: s.superPc.machine.id }, null);
    await refused(
      t,
      s.versions.commit(s.image.id, u.id, "c", null),
      "not_booted",
      /super has not booted the draft/,
    );
    s.store.imageUpdates.markBooted(u.id);
    s.live.add(s.superPc.machine.id);
    await refused(
      t,
      s.versions.commit(s.image.id, u.id, "c", null),
      "live_session",
      /machine super is running/,
    );
    s.live.clear();
    s.reserve.ok = false;
    await refused(
      t,
      s.versions.commit(s.image.id, u.id, "c", null),
      "insufficient_space",
      /new version is refused: 1.0 GiB free/,
    );
    s.reserve.ok = true;
    await refused(t, s.versions.commit(s.image.id, 999, "c", null), "not_found", /no update 999/);
    t.same(s.calls, [], "nothing was cloned by a refused commit");
    t.equal(s.store.images.get(s.image.id)?.current_version, 1, "still version 1");

    const v = await s.versions.commit(s.image.id, u.id, "patched", s.admin.id);
    t.match(v, { version: 2, note: "patched", created_by: s.admin.id, size_bytes: 1234 });
    t.equal(s.store.images.get(s.image.id)?.current_version, 2, "version 2 is current");
    t.match(s.store.imageUpdates.get(u.id), { status: "committed", committed_version: 2 });
    t.match(
      s.calls[0],
      new RegExp(`^freeze u${u.id}-draft img${s.image.id}-v2-`),
      "the draft is frozen",
    );
    t.same(s.calls.slice(1), [`retarget ${s.superPc.machine.id}`, `deleteDraft u${u.id}-draft`]);
    await refused(
      t,
      s.versions.commit(s.image.id, u.id, "again", null),
      "update_closed",
      /already committed/,
    );
    // A new update can be opened now, on version 2.
    const u2 = await s.versions.openUpdate(s.image.id, { machine_id: s.pcB.machine.id }, null);
    t.equal(u2.base_version, 2);
  },
);

t.test("discard: refused while the super-client runs its draft, then closed", async (t) => {
  const s = setup(t);
  const u = await s.versions.openUpdate(s.image.id, { machine_id: s.superPc.machine.id }, null);
  s.store.imageUpdates.markBooted(u.id);
  s.live.add(s.superPc.machine.id);
  await refused(t, s.versions.discard(s.image.id, u.id), "live_session", /super is running/);
  s.live.clear();
  const d = await s.versions.discard(s.image.id, u.id);
  t.equal(d.status, "discarded");
  t.same(s.calls, [`retarget ${s.superPc.machine.id}`, `deleteDraft u${u.id}-draft`]);
  t.equal(s.store.images.versions(s.image.id).length, 1, "no version was made");
  await refused(t, s.versions.discard(s.image.id, u.id), "update_closed", /already discarded/);
});

t.test("rollback: to an existing version only, never with an open update", async (t) => {
  const s = setup(t);
  s.store.images.addVersion(s.image.id, { path: "/images/v2.raw" });
  await refused(
    t,
    s.versions.rollback(s.image.id, 7),
    "not_found",
    /Win11 has no version 7 \(versions: 1, 2\)/,
  );
  const u = await s.versions.openUpdate(s.image.id, { machine_id: s.superPc.machine.id }, null);
  await refused(
    t,
    s.versions.rollback(s.image.id, 1),
    "update_open",
    /open update .* before a rollback/,
  );
  await s.versions.discard(s.image.id, u.id);
  const img = await s.versions.rollback(s.image.id, 1);
  t.equal(img.current_version, 1, "version 1 is current again");
  t.same(s.events, ["update_opened", "update_discarded", "rolled_back"]);
});

t.test("reset: a missing target is named; the storage's refusal passes through", async (t) => {
  const s = setup(t);
  await refused(t, s.versions.resetTarget(999), "not_found", /no target 999/);
  s.storage.resetTarget = async () => {
    throw new VersionError(
      "live_session",
      "machine pc-b has a live iSCSI session (abc): shut it down first",
    );
  };
  await refused(
    t,
    s.versions.resetTarget(s.pcB.target.id),
    "live_session",
    /pc-b has a live iSCSI session/,
  );
});

t.test("without the iSCSI side, changes that need disks are refused, not half-done", async (t) => {
  const { store } = tempStore(t, "versions-nostorage");
  const versions = new VersionService({ store, log: silent, keepVersions: 5 });
  const image = store.images.create({ name: "X", filename: "x", status: "ready" });
  store.images.addVersion(image.id, { path: "/x" });
  await refused(t, versions.resetTarget(1), "not_found", /no target 1/);
  const m = store.machines.create({ name: "m", mac_address: "52:54:00:00:00:0a" });
  store.targets.create({
    name: "m-t",
    iqn: "iqn.2024-01.test:m",
    portal_ip: "10.0.0.1",
    machine_id: m.id,
    system_image_id: image.id,
    initiator_iqn: "iqn.2024-01.test:c-m",
    chap_username: "u-m",
    chap_password: "Secret0123456789",
  });
  const u = await versions.openUpdate(image.id, { machine_id: m.id }, null);
  store.imageUpdates.markBooted(u.id);
  await refused(
    t,
    versions.commit(image.id, u.id, "c", null),
    "unavailable",
    /iSCSI side is not running/,
  );
  t.equal(store.images.versions(image.id).length, 1);
});

t.test("retention plan: the newest K stay, and no version in use ever goes", async (t) => {
  t.same(retentionPlan([1, 2, 3, 4, 5, 6], 3, new Set()), [1, 2, 3]);
  t.same(retentionPlan([1, 2, 3, 4, 5, 6], 3, new Set([1, 3])), [2], "in-use 1 and 3 stay");
  t.same(retentionPlan([1, 2], 5, new Set()), [], "fewer than K: nothing");
  t.same(retentionPlan([6, 1, 4], 1, new Set([1])), [4], "order of input does not matter");
});

t.test("retention job: deletes old versions, never one in use", async (t) => {
  const s = setup(t, { keep: 2 });
  for (let i = 2; i <= 6; i++) s.store.images.addVersion(s.image.id, { path: `/images/v${i}.raw` });
  // In use: v1 pinned by PC-B, v2 under SUPER's persistent overlay, v6 current; rolled back to v5.
  s.store.targets.update(s.pcB.target.id, { system_image_version: 1 });
  s.store.targets.update(s.superPc.target.id, { overlay_version: 2 });
  s.store.imageVersions.setCurrent(s.image.id, 5);
  const inUse = s.store.imageVersions.inUse(s.image.id);
  t.same([...inUse].sort(), [1, 2, 5], "in use: pinned, under an overlay, current");
  t.equal(
    s.store.imageVersions.get(s.image.id, 1)?.in_use_by,
    1,
    "in_use_by counts the pinning target",
  );
  const job = s.runner.submit(VERSION_RETENTION_JOB, {});
  const done = await s.runner.wait(job.id, 10_000);
  t.equal(done.status, "succeeded", done.error ?? "");
  t.same(
    s.store.images.versions(s.image.id).map((v) => v.version),
    [1, 2, 5, 6],
    "3 and 4 deleted; 1, 2, 5 in use; 5 and 6 are the newest two",
  );
  t.same(s.calls.sort(), ["deleteVersion /images/v3.raw", "deleteVersion /images/v4.raw"]);
});

t.test(
  "version selection: the super-client boots its draft, the others current or pinned",
  async (t) => {
    const s = setup(t);
    s.store.images.addVersion(s.image.id, { path: "/images/v2.raw" });
    const target = (id: number) => s.store.targets.get(id)!;
    t.match(selectSystemDisk(s.store, target(s.pcB.target.id), "own"), {
      overlayId: "own",
      imagePath: "/images/v2.raw",
      version: 2,
    });
    const u = await s.versions.openUpdate(s.image.id, { machine_id: s.superPc.machine.id }, null);
    t.match(selectSystemDisk(s.store, target(s.superPc.target.id), "own"), {
      overlayId: u.draft_overlay,
      imagePath: "/images/v2.raw",
      draftUpdateId: u.id,
    });
    t.equal(
      selectSystemDisk(s.store, target(s.pcB.target.id), "own").toString().includes("draft"),
      false,
      "every other machine keeps booting the current version",
    );
    s.store.targets.update(s.pcB.target.id, { system_image_version: 1, overlay_version: 1 });
    t.match(selectSystemDisk(s.store, target(s.pcB.target.id), "own"), { version: 1 });
    s.store.targets.update(s.pcB.target.id, { system_image_version: 9 });
    t.match(
      selectSystemDisk(s.store, target(s.pcB.target.id), "own"),
      /pins version 9 of image Win11, which does not exist/,
    );
    // versions_behind: a persistent overlay on v1 while v2 is current.
    s.store.targets.update(s.pcB.target.id, { system_image_version: null, overlay_version: 1 });
    t.equal(versionsBehind(s.store, target(s.pcB.target.id)), 1);
    t.equal(s.store.targets.getRow(s.pcB.target.id)?.versions_behind, 1, "the target view's count");
    t.same(s.store.targets.versionsBehindSummary(), { behind: 1, max: 1 }, "the metrics' summary");
    t.equal(s.store.imageUpdates.countOpen(), 1);
  },
);
