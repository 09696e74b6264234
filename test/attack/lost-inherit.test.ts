import { truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import t from "tap";
import { EventBus } from "../../src/events/bus.js";
import { createReflinkDriver } from "../../src/iscsi/overlay/reflink.js";
import { Reconciler } from "../../src/iscsi/reconciler.js";
import { TgtDriver } from "../../src/iscsi/target/tgt.js";
import { Store } from "../../src/store/index.js";
import { tempDir } from "../helpers/daemon.js";
import { readAt, writeAt } from "../helpers/file-at.js";
import { startReflinkTgt } from "../iscsi/reflink-tgt.js";

// Before: a new target took a deleted target's id (SQLite reused the largest id) and with
// it the overlay named after that id; and an overlay on disk under a target's name was
// served whoever it had been made for (a restored older database points ids at other disks).
const skip = process.getuid?.() === 0 ? false : "needs root: loop-mounted XFS and tgtd";
const PREFIX = "iqn.2024-01.io.bootfleet";
const MiB = 1024 * 1024;
const log = pino({ level: "silent" });

t.test("a new target never inherits another machine's disk", { skip }, async (t) => {
  const { tgtd, imagesDir, overlaysDir } = await startReflinkTgt(t, "inherit");
  const golden = join(imagesDir, "golden.raw");
  writeFileSync(golden, "GOLDEN");
  truncateSync(golden, 8 * MiB);

  const store = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 1000 });
  t.teardown(() => store.close());
  const image = store.images.create({ name: "G", filename: "g.raw", status: "ready" });
  store.images.addVersion(image.id, { path: golden });
  const bus = new EventBus();
  const sub = bus.subscribe({ types: ["system_alert"] });
  t.teardown(() => sub.close());
  const overlays = createReflinkDriver({ dir: overlaysDir, imageDir: imagesDir, logger: log });
  await overlays.check();
  const r = new Reconciler({
    store,
    bus,
    log,
    overlays,
    targets: new TgtDriver({
      iqnPrefix: PREFIX,
      confDir: tempDir(t),
      controlPort: tgtd.controlPort,
      logger: log,
    }),
    portal: { address: "127.0.0.1", port: tgtd.portalPort },
    imagePath: () => golden,
  });
  const addTarget = (n: number) => {
    const m = store.machines.create({ name: `pc-${n}`, mac_address: `52:54:00:bf:70:0${n}` });
    return store.targets.create({
      name: `pc-${n}-t`,
      iqn: `${PREFIX}:pc-${n}`,
      portal_ip: "127.0.0.1",
      portal_port: tgtd.portalPort,
      machine_id: m.id,
      system_image_id: image.id,
      initiator_iqn: `${PREFIX}:client-${n}`,
      chap_username: `u${n}`,
      chap_password: `Secret${n}Secret0123`,
    });
  };
  const overlayOf = (id: number) => join(overlaysDir, `t${id}-system.img`);

  // Target 1 gets an overlay and its machine writes to it; then the admin deletes it.
  const first = addTarget(1);
  await r.reconcileMachine(first.machine_id);
  writeAt(overlayOf(first.id), 4096, "MACHINE-1-PRIVATE");
  store.targets.delete(first.id);
  await r.reconcileMachine(first.machine_id);

  // The next target gets a new id and a fresh overlay: none of machine 1's bytes.
  const second = addTarget(2);
  t.not(second.id, first.id, `the new target has a new id (${second.id}, deleted ${first.id})`);
  await r.reconcileMachine(second.machine_id);
  t.equal(readAt(overlayOf(second.id), 0, 6), "GOLDEN", "cloned from the image");
  t.not(readAt(overlayOf(second.id), 4096, 17), "MACHINE-1-PRIVATE", "old bytes not visible");

  // An overlay already on disk under a new target's name, recorded for another machine
  // (an older database restored, a copied folder): never served, quarantined, replaced.
  const third = addTarget(3);
  writeFileSync(overlayOf(third.id), "OTHER-MACHINE-DISK");
  truncateSync(overlayOf(third.id), 8 * MiB);
  writeFileSync(
    join(overlaysDir, `t${third.id}-system.owner.json`),
    JSON.stringify({ targetId: third.id, machineId: 999, imageId: image.id, imageVersion: 1 }),
  );
  await r.reconcileMachine(third.machine_id);
  t.equal(readAt(overlayOf(third.id), 0, 6), "GOLDEN", "the target serves a fresh overlay");
  const q = await r.quarantine();
  const set = q.overlays.find((o) => o.overlayId === `t${third.id}-system`);
  t.ok(set, "the other machine's overlay is quarantined");
  t.match(set?.reason, "machine 999", "with the reason");
  t.equal(
    readAt(join(overlaysDir, "quarantine", `${set?.name}.img`), 0, 18),
    "OTHER-MACHINE-DISK",
    "its bytes are kept",
  );
  const alert = await sub.next(AbortSignal.timeout(10_000));
  t.match(JSON.stringify(alert?.event.payload), `t${third.id}-system`, "an alert tells the admin");
  // Its own overlay is adopted as its own on the next pass (the owner record matches).
  writeAt(overlayOf(third.id), 4096, "MACHINE-3-DATA");
  await r.reconcileMachine(third.machine_id);
  t.equal(readAt(overlayOf(third.id), 4096, 14), "MACHINE-3-DATA", "its own writes are kept");
});
