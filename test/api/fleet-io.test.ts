import { pino } from "pino";
import t from "tap";
import { FleetMonitor } from "../../src/fleet/monitor.js";
import type { ConfigFs } from "../../src/iscsi/target/lio-configfs.js";
import { readLioIo } from "../../src/iscsi/target/lio-io.js";
import { parseTgtStat, parseTgtStatByTid } from "../../src/iscsi/target/tgt-stat.js";
import type { TargetIo } from "../../src/iscsi/target/types.js";
import { Store } from "../../src/store/index.js";

t.test("tgt: completed reads and writes of every session and LUN", async (t) => {
  const header =
    "tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) wr_subm(bytes,cmds) wr_done(bytes,cmds) errs\n";
  t.same(parseTgtStat(header), { readBytes: 0, writeBytes: 0, commands: 0 }, "no session");
  t.same(parseTgtStat(`${header}1 1 3 4096 8 4096 8 512 1 512 1 0\n1 0 3 0 0 0 0 0 0 0 0 0\n`), {
    readBytes: 4096,
    writeBytes: 512,
    commands: 9,
  });
  t.same(parseTgtStat(`${header}1 1 3 (1024,2) (1024,2) (0,0) (0,0) 0\n`), {
    readBytes: 1024,
    writeBytes: 0,
    commands: 2,
  });
});

t.test("tgt: every target's counters from one `stat --mode system`, by tid", async (t) => {
  // Captured from tgt 1.0.85 with iscsi-perf logged in to tids 1 and 2.
  const text = [
    "tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) wr_subm(bytes,cmds) wr_done(bytes,cmds) errs",
    "  1   0   1            0      0            0      0            0      0            0      0    0",
    "  1   1   1    125800480  30714    125788192  30711            0      0            0      0    1",
    "  2   0   2            0      0            0      0            0      0            0      0    0",
    "  2   1   2    131244064  32043    131235872  32041            0      0            0      0    1",
    "",
  ].join("\n");
  t.same(Object.fromEntries(parseTgtStatByTid(text)), {
    1: { readBytes: 125788192, writeBytes: 0, commands: 30711 },
    2: { readBytes: 131235872, writeBytes: 0, commands: 32041 },
  });
  t.same(parseTgtStatByTid(text.split("\n")[0]!).size, 0, "no session: no entry");
});

t.test("LIO: per-LUN configfs statistics, cumulative", async (t) => {
  const root = "/cfg";
  const files: Record<string, string> = {
    "/cfg/iscsi/iqn.x:a/tpgt_1/lun/lun_0/statistics/scsi_tgt_port/in_cmds": "12\n",
    "/cfg/iscsi/iqn.x:a/tpgt_1/lun/lun_0/statistics/scsi_tgt_port/read_mbytes": "3\n",
    "/cfg/iscsi/iqn.x:a/tpgt_1/lun/lun_0/statistics/scsi_tgt_port/write_mbytes": "0\n",
    "/cfg/iscsi/iqn.x:a/tpgt_1/lun/lun_1/statistics/scsi_tgt_port/in_cmds": "5\n",
  };
  const fs = {
    readdir: async (p: string) => {
      if (p === "/cfg/iscsi/iqn.x:a/tpgt_1/lun") return ["lun_0", "lun_1", "info"];
      throw new Error("ENOENT");
    },
    read: async (p: string) => {
      const v = files[p];
      if (v === undefined) throw new Error("ENOENT");
      return v;
    },
  } as unknown as ConfigFs;
  t.same(await readLioIo(fs, root, "iqn.x:a"), {
    readBytes: 3 * 2 ** 20,
    writeBytes: 0,
    commands: 17,
    cumulative: true,
  });
  t.same(await readLioIo(fs, root, "iqn.x:none"), {
    readBytes: 0,
    writeBytes: 0,
    commands: 0,
    cumulative: true,
  });
});

t.test("cumulative counters: only a rise since before the login is this boot's I/O", async (t) => {
  const store = Store.open({ path: ":memory:", busyTimeoutMs: 100 });
  t.teardown(() => store.close());
  const image = store.images.create({ name: "G", filename: "g.raw", status: "ready" });
  const m = store.machines.create({ name: "io-pc", mac_address: "52:54:00:50:00:01" });
  store.targets.create({
    name: "io-t",
    iqn: "iqn.x:io-pc",
    portal_ip: "10.99.0.1",
    machine_id: m.id,
    system_image_id: image.id,
    initiator_iqn: "iqn.x:c",
    chap_username: "u",
    chap_password: "p",
  });
  let counters: TargetIo = { readBytes: 0, writeBytes: 0, commands: 500, cumulative: true };
  const fleet = new FleetMonitor({
    store,
    log: pino({ level: "silent" }),
    stallAfterMs: 60_000,
    io: async (iqns) => new Map(iqns.map((q) => [q, counters])),
  });
  // A previous boot left 500 commands on the counter; this boot got its script.
  store.sessions.stampPhase(m.id, "script_served_at");
  await fleet.tick();
  const s = store.sessions.current(m.id)!;
  store.sessions.update(s.id, { status: "active", iscsi_login_at: new Date().toISOString() });
  await fleet.tick();
  t.equal(fleet.stateOf(m.id).state, "iscsi_logged_in", "old I/O does not count");
  counters = { ...counters, commands: 503 };
  await fleet.tick();
  t.equal(fleet.stateOf(m.id).state, "booted", "new I/O does");
});

t.test("session_stopped goes out once, whoever saw the end first", async (t) => {
  const { EventBus } = await import("../../src/events/bus.js");
  const store = Store.open({ path: ":memory:", busyTimeoutMs: 100 });
  t.teardown(() => store.close());
  const bus = new EventBus();
  const stops: string[] = [];
  bus.on((e) => {
    if (e.type === "session_stopped") stops.push(e.payload.session_id);
  });
  const fleet = new FleetMonitor({
    store,
    bus,
    log: pino({ level: "silent" }),
    stallAfterMs: 60_000,
  });
  const m = store.machines.create({ name: "st-pc", mac_address: "52:54:00:50:00:02" });
  fleet.evaluate();
  const first = store.sessions.stampPhase(m.id, "dhcp_offer_at");
  fleet.evaluateMachine(m.id);
  // The reconciler announces the logout itself, then the monitor sees the end.
  bus.publish("session_stopped", {
    session_id: first.session_id,
    machine_id: m.id,
    status: "stopped",
  });
  store.sessions.end(first.id, "stopped");
  fleet.evaluate();
  t.same(stops, [first.session_id], "announced once");
  // A new boot replaces a session nobody announced: the monitor does.
  const second = store.sessions.stampPhase(m.id, "dhcp_offer_at");
  fleet.evaluateMachine(m.id);
  store.sessions.end(second.id, "stopped");
  const third = store.sessions.stampPhase(m.id, "dhcp_offer_at");
  fleet.evaluateMachine(m.id);
  t.same(stops, [first.session_id, second.session_id]);
  t.equal(fleet.stateOf(m.id).state, "pxe");
  t.not(third.session_id, second.session_id);
});

t.test("one I/O read per tick for every booting machine, not one per machine", async (t) => {
  const store = Store.open({ path: ":memory:", busyTimeoutMs: 100 });
  t.teardown(() => store.close());
  const image = store.images.create({ name: "G", filename: "g.raw", status: "ready" });
  const ids: number[] = [];
  for (const n of [1, 2, 3]) {
    const m = store.machines.create({ name: `pc-${n}`, mac_address: `52:54:00:50:01:0${n}` });
    store.targets.create({
      name: `t-${n}`,
      iqn: `iqn.x:pc-${n}`,
      portal_ip: "10.99.0.1",
      machine_id: m.id,
      system_image_id: image.id,
      initiator_iqn: `iqn.x:c${n}`,
      chap_username: `u${n}`,
      chap_password: "p",
    });
    ids.push(m.id);
  }
  const asked: string[][] = [];
  const fleet = new FleetMonitor({
    store,
    log: pino({ level: "silent" }),
    stallAfterMs: 60_000,
    // pc-3's target could not be read: absent from the answer.
    io: async (iqns) => {
      asked.push([...iqns].sort());
      return new Map(
        iqns
          .filter((q) => q !== "iqn.x:pc-3")
          .map((q) => [q, { readBytes: 512, writeBytes: 0, commands: 1 }]),
      );
    },
  });
  await fleet.tick();
  t.same(asked, [], "nobody booting: no read");
  for (const id of ids) {
    store.sessions.stampPhase(id, "script_served_at");
    const s = store.sessions.current(id)!;
    store.sessions.update(s.id, { status: "active", iscsi_login_at: new Date().toISOString() });
  }
  await fleet.tick();
  t.same(asked, [["iqn.x:pc-1", "iqn.x:pc-2", "iqn.x:pc-3"]], "one read for the three");
  t.equal(fleet.stateOf(ids[0]!).state, "booted");
  t.equal(fleet.stateOf(ids[1]!).state, "booted");
  t.equal(fleet.stateOf(ids[2]!).state, "iscsi_logged_in", "an unread target is not booted");
  await fleet.tick();
  t.same(asked[1], ["iqn.x:pc-3"], "then only the one whose I/O is not seen yet");
});
