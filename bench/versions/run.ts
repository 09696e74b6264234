/**
 * Commit and rollback of an image update on reflink XFS (loop-mounted), for a 1 GiB image
 * (fully written) and a 100 GiB sparse image (1 GiB of data in 4 MiB pieces, and a
 * fragmented variant): the draft is a real reflink overlay holding 64 MiB of the
 * super-client's scattered writes; commit goes through VersionService with the reflink
 * driver's freezeVersion (what the daemon does), rollback is the store's pointer change.
 * Then, on a persistent machine's overlay holding the same 64 MiB of writes: a writeback
 * snapshot (SnapshotService.take), its restore, and a promote (VersionService.promote).
 *
 *   node --import tsx bench/versions/run.ts        (root; a few minutes; about 3 GiB of disk)
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { SnapshotService } from "../../src/images/snapshots.js";
import { VersionService, type VersionStorage } from "../../src/images/versions.js";
import { createReflinkDriver } from "../../src/iscsi/overlay/reflink.js";
import { systemOverlayId } from "../../src/iscsi/reconciler.js";
import { Store } from "../../src/store/index.js";
import { mountLoopFs } from "../../test/iscsi/overlay/loopfs.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const RUNS = 5;
const log = pino({ level: "silent" });

interface Case {
  label: string;
  sizeBytes: number;
  dataBytes: number;
  pieceBytes: number;
}
const CASES: Case[] = [
  { label: "1 GiB, fully written", sizeBytes: GiB, dataBytes: GiB, pieceBytes: 4 * MiB },
  {
    label: "100 GiB sparse, 1 GiB data",
    sizeBytes: 100 * GiB,
    dataBytes: GiB,
    pieceBytes: 4 * MiB,
  },
  {
    label: "100 GiB sparse, 256 MiB in 16 KiB pieces",
    sizeBytes: 100 * GiB,
    dataBytes: 256 * MiB,
    pieceBytes: 16 * 1024,
  },
];

async function scatter(
  path: string,
  sizeBytes: number,
  dataBytes: number,
  piece: number,
  create: boolean,
) {
  const pieces = dataBytes / piece;
  const stride = Math.floor(sizeBytes / pieces / 4096) * 4096;
  const fh = await open(path, create ? "wx" : "r+");
  try {
    const chunk = randomBytes(piece);
    for (let i = 0; i < pieces; i++) {
      chunk.writeUInt32LE(i, 0);
      await fh.write(chunk, 0, piece, i * stride + (create ? 0 : 8192));
    }
    if (create) await fh.truncate(sizeBytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const fs = await mountLoopFs("xfs-reflink", 260 * GiB, "bench-versions");
try {
  const rows = [
    "| image | commit median (min–max) | rollback median | snapshot | restore | promote |",
    "|---|---|---|---|---|---|",
  ];
  for (const c of CASES) {
    const base = join(fs.dir, c.label.replace(/\W+/g, "-"));
    const images = join(base, "images");
    const overlays = join(base, "overlays");
    await mkdir(images, { recursive: true });
    await mkdir(overlays, { recursive: true });
    const v1 = join(images, "v1.raw");
    await scatter(v1, c.sizeBytes, c.dataBytes, c.pieceBytes, true);
    const driver = createReflinkDriver({ dir: overlays, imageDir: images, logger: log });
    const store = Store.open({ path: join(base, "db.sqlite"), busyTimeoutMs: 1000 });
    const storage: VersionStorage = {
      freeze: async (d, n) => driver.freezeVersion!(d, n),
      deleteDraft: (d) => driver.delete(d),
      deleteVersion: (p) => driver.deleteVersion!(p),
      isLive: async () => false,
      resetTarget: async () => {},
      retarget: async () => {},
      // What the reconciler does under the machine's lock, minus the target rebuild.
      cloneOverlay: (id, n) => driver.freezeVersion!(systemOverlayId(id), n),
      restoreOverlay: async (id, p, v) => {
        await driver.reset(p, systemOverlayId(id));
        store.targets.update(id, { overlay_version: v });
      },
      collectGarbage: async () => {
        for (const g of store.storageGarbage.pending()) {
          await driver.deleteVersion!(g.path);
          store.storageGarbage.done(g.id);
        }
      },
    };
    const versions = new VersionService({ store, log, keepVersions: 100 });
    versions.attach(storage);
    const image = store.images.create({ name: "img", filename: "v1.raw", status: "ready" });
    store.images.addVersion(image.id, { path: v1, size_bytes: c.sizeBytes });
    const m = store.machines.create({ name: "super", mac_address: "52:54:00:00:00:01" });
    const snapshots = new SnapshotService({ store, log, versions });
    const st = store.targets.create({
      name: "super-t",
      iqn: "iqn.2024-01.bench:super",
      portal_ip: "10.0.0.1",
      machine_id: m.id,
      system_image_id: image.id,
      initiator_iqn: "iqn.2024-01.bench:c",
      chap_username: "u",
      chap_password: "Secret0123456789",
    });
    const commits: number[] = [];
    const rollbacks: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const u = await versions.openUpdate(image.id, { machine_id: m.id }, null);
      const cur = store.images.get(image.id)!.current_version!;
      const path = store.images.versions(image.id).find((v) => v.version === cur)!.path;
      const draft = await driver.create(path, u.draft_overlay);
      // The super-client's patch: 64 MiB of 64 KiB writes all over the disk.
      await scatter(draft.path, c.sizeBytes, 64 * MiB, 64 * 1024, false);
      store.imageUpdates.markBooted(u.id);
      let t0 = performance.now();
      await versions.commit(image.id, u.id, `run ${i}`, null);
      commits.push(performance.now() - t0);
      t0 = performance.now();
      await versions.rollback(image.id, cur);
      rollbacks.push(performance.now() - t0);
      await versions.rollback(image.id, store.images.versions(image.id).at(-1)!.version);
    }
    // The super-client, now a persistent machine on the current version, with its writes.
    const cur = store.images.get(image.id)!.current_version!;
    const curPath = store.images.versions(image.id).find((v) => v.version === cur)!.path;
    const own = await driver.create(curPath, systemOverlayId(st.id));
    store.targets.update(st.id, { overlay_version: cur });
    await scatter(own.path, c.sizeBytes, 64 * MiB, 64 * 1024, false);
    const takes: number[] = [];
    const restores: number[] = [];
    const promotes: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      let t0 = performance.now();
      const snap = await snapshots.take(st.id, `run ${i}`, null);
      takes.push(performance.now() - t0);
      t0 = performance.now();
      await snapshots.restore(st.id, snap.id);
      restores.push(performance.now() - t0);
      t0 = performance.now();
      await versions.promote(st.id, { comment: `run ${i}` }, null);
      promotes.push(performance.now() - t0);
      await snapshots.delete(st.id, snap.id);
    }
    const cell = (xs: number[]) =>
      `${median(xs).toFixed(1)} ms (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
    rows.push(
      `| ${c.label} | ${cell(commits)} | ${median(rollbacks).toFixed(2)} ms | ${cell(takes)} | ${cell(restores)} | ${cell(promotes)} |`,
    );
    console.log(rows.at(-1));
    store.close();
    await rm(base, { recursive: true, force: true });
  }
  console.log(`\n${rows.join("\n")}`);
} finally {
  await fs.cleanup();
}
