import { join } from "node:path";
import pino from "pino";
import t from "tap";
import { EventBus } from "../../src/events/bus.js";
import { FleetMonitor } from "../../src/fleet/monitor.js";
import type { ProxyRequestInfo } from "../../src/netboot/dhcp/server.js";
import { dhcpPolicy } from "../../src/netboot/dhcp-policy.js";
import { Discovery } from "../../src/netboot/discovery.js";
import { BootTimeline } from "../../src/netboot/timeline.js";
import { Store } from "../../src/store/index.js";
import { tempDir } from "../helpers/daemon.js";
import { pxeDiscover } from "./dhcp/rfc-builder.js";

// A known machine's offer is written behind its reply (store/pending-offers.ts): the
// proxy-DHCP's turn writes nothing, the offers of a burst are written together and the fleet
// told once, and the next phase of a boot still lands on the session its offer opened.

const log = pino({ level: "silent" });

t.test("a burst of offers: written after the replies, together, the fleet told once", async (t) => {
  const store = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
  t.teardown(() => store.close());
  const macs = Array.from({ length: 8 }, (_, i) => `52:54:00:20:00:0${i}`);
  for (const mac of macs) store.machines.create({ name: `pc-${mac.slice(-1)}`, mac_address: mac });
  const onFile = () =>
    store.db.prepare("SELECT count(*) FROM boot_sessions").pluck().get() as number;
  const told: { ids: readonly number[]; onFile: number }[] = [];
  let toldOnce!: () => void;
  const fleetTold = new Promise<void>((r) => {
    toldOnce = r;
  });
  const timeline = new BootTimeline({
    store,
    log,
    macForIp: async () => undefined,
    onPhases: (ids) => {
      told.push({ ids, onFile: onFile() });
      toldOnce();
    },
  });
  const policy = dhcpPolicy({
    discovery: new Discovery({ store, log }),
    timeline,
    scriptUrl: () => "unused",
    chainloadNicIpxe: false,
  });
  const request = (mac: string): ProxyRequestInfo => ({
    client: pxeDiscover(mac, false),
    ifname: "br0",
    serverAddress: "10.99.0.1",
    sourceAddress: "0.0.0.0",
    port: 67,
  });
  // What the DHCP server does per request, after its reply went out: four requests in one
  // turn of the event loop, four in the next (a read batch each).
  for (const mac of macs.slice(0, 4)) policy(request(mac)).replied?.("offer");
  t.equal(onFile(), 0, "nothing written on the replies' turn");
  await new Promise((r) => setImmediate(r));
  for (const mac of macs.slice(4)) policy(request(mac)).replied?.("offer");
  t.equal(onFile(), 0, "nor at the end of it: the next turn's offers join them");

  await fleetTold;
  t.equal(told.length, 1, "the fleet is told once for both turns");
  t.equal(told[0]!.ids.length, 8, "with its eight machines");
  t.equal(told[0]!.onFile, 8, "after all eight sessions were written");
});

t.test("the script served right after the offer stamps the offer's session", async (t) => {
  const store = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
  t.teardown(() => store.close());
  const machine = store.machines.create({ name: "pc-s", mac_address: "52:54:00:20:01:01" });
  const timeline = new BootTimeline({ store, log, macForIp: async () => undefined });
  timeline.replied(
    machine,
    {
      client: pxeDiscover(machine.mac_address, false),
      ifname: "br0",
      serverAddress: "10.99.0.1",
      sourceAddress: "0.0.0.0",
      port: 67,
    },
    "offer",
  );
  // Before the queue's timer: the script route's stamp must find the offer's session.
  timeline.scriptServed(machine, "10.99.0.50", "sanboot");
  const sessions = store.sessions.listRows(
    { skip: 0, limit: 10, sort: "id", order: "asc" },
    { machine_id: machine.id },
  );
  t.equal(sessions.total, 1, "one boot, one session");
  t.ok(sessions.rows[0]?.dhcp_offer_at, "opened by the offer");
  t.ok(sessions.rows[0]?.script_served_at, "stamped by the script");
  t.equal(store.machines.get(machine.id)?.boot_count, 1);
});

t.test(
  "the fleet, told after a write, reads it without writing the offers queued since",
  async (t) => {
    const store = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
    t.teardown(() => store.close());
    const macs = Array.from({ length: 8 }, (_, i) => `52:54:00:20:02:0${i}`);
    for (const mac of macs)
      store.machines.create({ name: `pc-${mac.slice(-1)}`, mac_address: mac });
    const bus = new EventBus();
    const states: number[] = [];
    bus.on((e) => {
      if (e.type === "machine_state") states.push(e.payload.machine_id);
    });
    const fleet = new FleetMonitor({ store, log, bus, stallAfterMs: 600_000 });
    fleet.start();
    t.teardown(() => fleet.stop());
    // Which writes of the offers the fleet's own read made.
    let inFleet = false;
    const writes: { offers: number; byFleet: boolean }[] = [];
    const record = store.sessions.recordOffers.bind(store.sessions);
    store.sessions.recordOffers = (offers) => {
      writes.push({ offers: offers.length, byFleet: inFleet });
      record(offers);
    };
    let told!: () => void;
    const fleetTold = new Promise<void>((r) => {
      told = r;
    });
    const timeline = new BootTimeline({
      store,
      log,
      macForIp: async () => undefined,
      onPhases: (ids) => {
        inFleet = true;
        try {
          fleet.evaluateMachines(ids);
        } finally {
          inFleet = false;
        }
        told();
      },
    });
    const policy = dhcpPolicy({
      discovery: new Discovery({ store, log }),
      timeline,
      scriptUrl: () => "unused",
      chainloadNicIpxe: false,
    });
    const offer = (mac: string) =>
      policy({
        client: pxeDiscover(mac, false),
        ifname: "br0",
        serverAddress: "10.99.0.1",
        sourceAddress: "0.0.0.0",
        port: 67,
      }).replied?.("offer");
    for (const mac of macs.slice(0, 4)) offer(mac);
    timeline.flushOffers();
    // Requests keep coming between the write and the fleet's turn: a steady stream.
    for (const mac of macs.slice(4)) offer(mac);
    await fleetTold;
    const onFile = store.db.prepare("SELECT count(*) FROM boot_sessions").pluck().get();
    t.same(writes, [{ offers: 4, byFleet: false }], "the fleet's read wrote nothing");
    t.equal(onFile, 4, "the next four still wait for their batch");
    t.same([...states].sort(), [1, 2, 3, 4], "the fleet derived the four written");
    // The next batch is written with the others of its 20 ms, and the fleet told of it.
    timeline.flushOffers();
    t.same(writes[1], { offers: 4, byFleet: false });
  },
);

t.test(
  "a boot's TFTP transfer: written with the offers, on the offer's session, then the fleet told",
  async (t) => {
    const store = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
    t.teardown(() => store.close());
    const a = store.machines.create({ name: "pc-a", mac_address: "52:54:00:20:03:01" });
    const b = store.machines.create({ name: "pc-b", mac_address: "52:54:00:20:03:02" });
    const transactions: string[] = [];
    const record = store.sessions.recordTimeline.bind(store.sessions);
    store.sessions.recordTimeline = (entries) => {
      transactions.push(entries.map((e) => ("offer" in e ? "offer" : "transfer")).join(","));
      record(entries);
    };
    const onFile = (id: number) =>
      store.db
        .prepare(
          "SELECT count(*) AS n, max(tftp_done_at) AS done, max(tftp_file) AS file FROM boot_sessions WHERE machine_id = ?",
        )
        .get(id) as { n: number; done: string | null; file: string | null };
    const told: { ids: readonly number[]; done: string | null }[] = [];
    let toldOnce!: () => void;
    const fleetTold = new Promise<void>((r) => {
      toldOnce = r;
    });
    const byIp: Record<string, string> = { "10.99.0.51": a.mac_address };
    const timeline = new BootTimeline({
      store,
      log,
      macForIp: async (ip) => byIp[ip],
      onPhases: (ids) => {
        told.push({ ids, done: onFile(a.id).done });
        toldOnce();
      },
    });
    const req = (mac: string): ProxyRequestInfo => ({
      client: pxeDiscover(mac, false),
      ifname: "br0",
      serverAddress: "10.99.0.1",
      sourceAddress: "0.0.0.0",
      port: 67,
    });
    timeline.replied(a, req(a.mac_address), "offer");
    await timeline.transferred({
      file: "undionly.kpxe",
      bytes: 70_000,
      durationMs: 120.4,
      clientAddress: "10.99.0.51",
      ok: true,
      sizeProbe: false,
    } as never);
    timeline.replied(b, req(b.mac_address), "offer");
    t.same(
      onFile(a.id),
      { n: 0, done: null, file: null },
      "nothing written on the transfer's turn",
    );

    await fleetTold;
    t.same(transactions, ["offer,transfer,offer"], "one write for the three, in their order");
    const s = onFile(a.id);
    t.equal(s.n, 1, "one session: the transfer stamped the one its offer opened");
    t.equal(s.file, "undionly.kpxe");
    t.ok(s.done, "tftp_done_at stamped");
    t.same(told[0]?.ids.slice().sort(), [a.id, b.id].sort(), "the fleet told of both machines");
    t.ok(told[0]?.done, "after the transfer was written");
    // A reader in this process never misses a queued transfer: it writes the queue first.
    await timeline.transferred({
      file: "ipxe.efi",
      bytes: 1,
      durationMs: 1,
      clientAddress: "10.99.0.51",
      ok: true,
      sizeProbe: false,
    } as never);
    t.equal(store.sessions.current(a.id)?.tftp_file, "ipxe.efi", "read through the store: written");
  },
);
