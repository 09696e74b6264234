import { spawn } from "node:child_process";
import { truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import t, { type Test } from "tap";

import { createReflinkDriver } from "../../src/iscsi/overlay/reflink.js";
import { Reconciler } from "../../src/iscsi/reconciler.js";
import { TgtDriver } from "../../src/iscsi/target/tgt.js";
import { type TgtdManager, tgtdManager } from "../../src/iscsi/target/tgtd-ipc.js";
import { Store } from "../../src/store/index.js";
import { iscsiUrl, readCapacity } from "../fixtures/iscsi/tgtd.js";
import { tempDir } from "../helpers/daemon.js";
import { startReflinkTgt } from "./reflink-tgt.js";

// A boot on tgt takes the spare account the driver made ahead (tgt-spares.ts): the
// reconciler stores its user and secret and the script hands those out; the boot before
// opens nothing; a restarted daemon, with no spare, gives a fresh secret to the user in force.
// Real tgtd, reflink overlays on a loop-mounted XFS, real CHAP logins.
const skip = process.getuid?.() === 0 ? false : "needs root: loop-mounted XFS and tgtd";
const PREFIX = "iqn.2024-01.io.bootfleet";
const MiB = 1024 * 1024;

/**
 * One machine with one target on a reflink overlay of an 8 MiB golden image, its store, and
 * a tgtd of the test's own; the overlay driver checked. `daemon` makes what a daemon holds:
 * a tgt driver with spares (made after 100 ms of quiet) and a reconciler over it.
 */
async function oneMachine(t: Test, n: number) {
  const { tgtd, imagesDir, overlaysDir } = await startReflinkTgt(t, `sanboot-spare-${n}`);
  const golden = join(imagesDir, "system-v1.raw");
  writeFileSync(golden, "SYSTEM");
  truncateSync(golden, 8 * MiB);
  const store = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 1000 });
  t.teardown(() => store.close());
  const image = store.images.create({ name: "System", filename: "system.raw", status: "ready" });
  store.images.addVersion(image.id, { path: golden });
  const machine = store.machines.create({ name: `pc-${n}`, mac_address: `52:54:00:bf:72:0${n}` });
  const target = store.targets.create({
    name: `pc-${n}-t`,
    iqn: `${PREFIX}:pc-${n}`,
    portal_ip: "127.0.0.1",
    portal_port: tgtd.portalPort,
    machine_id: machine.id,
    system_image_id: image.id,
    initiator_iqn: `${PREFIX}:client-${n}`,
    chap_username: `bf-pc-${n}`,
    chap_password: "FirstSecret12345",
  });
  const log = pino({ level: "silent" });
  const overlays = createReflinkDriver({ dir: overlaysDir, imageDir: imagesDir, logger: log });
  await overlays.check();
  const daemon = (o: { confDir: string; manage?: TgtdManager; clock?: () => number }) => {
    const tgt = new TgtDriver({
      iqnPrefix: PREFIX,
      confDir: o.confDir,
      controlPort: tgtd.controlPort,
      logger: log,
      ...(o.manage ? { manage: o.manage } : {}),
      spareSecret: () => `Spare${Math.random().toString(36).slice(2, 13).padEnd(11, "x")}`,
      spareQuietMs: 100,
    });
    // The target's config file is written after an apply resolves: wait for it before the
    // folders go (a write in flight made the folder's removal fail, and the teardowns after
    // it, tgtd's stop among them, never ran).
    t.teardown(async () => {
      tgt.close();
      await tgt.settled(target.iqn);
    });
    const r = new Reconciler({
      store,
      log,
      overlays,
      targets: tgt,
      portal: { address: "127.0.0.1", port: tgtd.portalPort },
      imagePath: () => undefined,
      ...(o.clock ? { clock: o.clock } : {}),
    });
    return { tgt, r };
  };
  return { tgtd, store, machine, target, daemon };
}

t.test("sanboot on tgt: the spare's credentials, stored and handed out", { skip }, async (t) => {
  const m = await oneMachine(t, 1);
  const { tgtd, store, machine, target } = m;
  const confDir = tempDir(t);
  const daemon = () => m.daemon({ confDir });
  const boot = async (r: Reconciler) => {
    const res = await r.prepareSanboot(
      store.machines.get(machine.id)!,
      store.targets.get(target.id)!,
    );
    if (!res.ok) throw new Error(`boot not prepared: ${res.reason}`);
    return res.data.chap;
  };
  const login = (chap: { username: string; password: string }) =>
    readCapacity({
      portalPort: tgtd.portalPort,
      iqn: target.iqn,
      lun: 1,
      initiator: target.initiator_iqn,
      user: chap.username,
      password: chap.password,
    });
  const spareOf = async (tgt: TgtDriver, user: string) => {
    for (let i = 0; i < 100; i++) {
      const s = tgt.readySecret(target.iqn, user);
      if (s) return s;
      await new Promise((r) => setTimeout(r, 50));
    }
    return undefined;
  };

  const { tgt, r } = daemon();
  const first = await boot(r);
  t.equal(first.username, "bf-pc-1", "no spare yet: the same user, a fresh secret");
  t.not(first.password, "FirstSecret12345");
  t.equal((await login(first)).size, 8 * MiB, "the first boot's secret opens it");

  const spare = await spareOf(tgt, "bf-pc-1");
  t.ok(spare, "a spare is made once tgtd is quiet");
  const second = await boot(r);
  t.same(
    second,
    { username: spare?.user, password: spare?.password },
    "the boot hands out the spare",
  );
  t.equal(
    store.targets.get(target.id)?.chap_username,
    "bf-pc-1:b",
    "the store holds the user in force",
  );
  t.equal(store.targets.get(target.id)?.chap_password, spare?.password);
  t.equal((await login(second)).size, 8 * MiB, "its secret opens it");
  t.equal((await login(first)).size, undefined, "the boot before opens nothing");

  // A restart: the new driver knows no spare; the user in force gets a fresh secret.
  await tgt.settled(target.iqn);
  tgt.close();
  const again = daemon();
  await again.r.startup();
  const third = await boot(again.r);
  t.equal(third.username, "bf-pc-1:b", "the user in force, as the store holds it");
  t.not(third.password, second.password, "a fresh secret");
  t.equal((await login(third)).size, 8 * MiB, "it opens the target");
  t.equal((await login(second)).size, undefined, "the boot before the restart opens nothing");
  // Its next spare takes the first name: the account left from before the restart is
  // bound nowhere, so it is taken over.
  const next = await spareOf(again.tgt, "bf-pc-1:b");
  t.equal(next?.user, "bf-pc-1", "the spare after a restart takes the other name");
  const fourth = await boot(again.r);
  t.equal((await login(fourth)).size, 8 * MiB, "and a boot takes it");
});

t.test("a machine that is off gets its next boot's secret ahead", { skip }, async (t) => {
  const m = await oneMachine(t, 2);
  const { tgtd, store, machine, target } = m;
  const commands: string[][] = [];
  const real = tgtdManager(tgtd.controlPort);
  let skewMs = 0;
  const { tgt, r } = m.daemon({
    confDir: tempDir(t),
    manage: (args) => {
      commands.push([...args]);
      return real(args);
    },
    clock: () => Date.now() + skewMs,
  });
  const row = () => store.targets.get(target.id)!;
  const login = (user: string, password: string) =>
    readCapacity({
      portalPort: tgtd.portalPort,
      iqn: target.iqn,
      lun: 1,
      initiator: target.initiator_iqn,
      user,
      password,
    });
  const spareMade = async () => {
    for (let i = 0; i < 100 && !tgt.readySecret(target.iqn, row().chap_username); i++)
      await new Promise((res) => setTimeout(res, 50));
    t.ok(tgt.readySecret(target.iqn, row().chap_username), "a spare is ready");
  };

  await r.startup();
  const before = row();
  t.equal((await login(before.chap_username, before.chap_password)).size, 8 * MiB);
  await spareMade();
  t.equal(await r.freshenIdle(), 1, "a machine never booted is off: its secret made ready");
  const ready = row();
  t.equal(ready.chap_username, "bf-pc-2:b", "the spare's user, in the store");
  t.not(ready.chap_password, before.chap_password);
  t.equal((await login(ready.chap_username, ready.chap_password)).size, 8 * MiB, "applied");
  t.equal(
    (await login(before.chap_username, before.chap_password)).size,
    undefined,
    "the last secret opens nothing now",
  );
  t.equal(await r.freshenIdle(), 0, "made once");

  commands.length = 0;
  const res = await r.prepareSanboot(store.machines.get(machine.id)!, row());
  t.ok(res.ok);
  t.same(
    res.ok && res.data.chap,
    { username: ready.chap_username, password: ready.chap_password },
    "the boot hands out the secret made ready",
  );
  t.same(commands, [], "and asks nothing of tgtd");
  await tgt.settled(target.iqn);

  // The boot is in progress, then ended a minute ago: not off.
  await spareMade();
  const session = store.sessions.start({ machine_id: machine.id });
  skewMs = 2 * 60_000;
  t.equal(await r.freshenIdle(), 0, "a boot in progress keeps its secret");
  store.sessions.end(session.id, "stopped");
  t.equal(await r.freshenIdle(), 0, "a boot ended 2 minutes ago keeps its secret");
  // Logged in (its OS runs) long after: not off either.
  skewMs = 11 * 60_000;
  const perf = spawn(
    "iscsi-perf",
    [
      "-i",
      target.initiator_iqn,
      "-t",
      "30",
      "-x",
      "0",
      iscsiUrl({
        portalPort: tgtd.portalPort,
        iqn: target.iqn,
        lun: 1,
        initiator: target.initiator_iqn,
        user: ready.chap_username,
        password: ready.chap_password,
      }),
    ],
    { stdio: "ignore" },
  );
  t.teardown(() => {
    if (perf.exitCode === null) perf.kill("SIGKILL");
  });
  for (let i = 0; i < 100 && ((await tgt.allSessions()).get(target.iqn) ?? []).length === 0; i++)
    await new Promise((res) => setTimeout(res, 100));
  t.equal(((await tgt.allSessions()).get(target.iqn) ?? []).length, 1, "logged in");
  t.equal(await r.freshenIdle(), 0, "a machine logged in keeps its secret");
  perf.kill("SIGKILL");
  for (let i = 0; i < 100 && ((await tgt.allSessions()).get(target.iqn) ?? []).length > 0; i++)
    await new Promise((res) => setTimeout(res, 100));
  t.equal(await r.freshenIdle(), 1, "off for 11 minutes, no login: made ready again");
  t.not(row().chap_password, ready.chap_password);
});
