import { join } from "node:path";
import pino from "pino";
import t from "tap";
import { EventBus } from "../../src/events/bus.js";
import { FleetMonitor } from "../../src/fleet/monitor.js";
import { RELOGIN_WINDOW_MS } from "../../src/iscsi/boot-logins.js";
import type { OverlayDriver } from "../../src/iscsi/overlay/types.js";
import { Reconciler } from "../../src/iscsi/reconciler.js";
import type { TargetDriver, TargetSession } from "../../src/iscsi/target/types.js";
import { BootTimeline } from "../../src/netboot/timeline.js";
import { Store } from "../../src/store/index.js";
import { tempDir } from "../helpers/daemon.js";
import { pxeDiscover as discover } from "../netboot/dhcp/rfc-builder.js";

// One boot is one session, however many times it logs in to its disk: iPXE's sanboot, then
// the booted OS's own logins (initramfs, iscsid). Only a new PXE phase, or a login long after
// the last logout, opens a new one. The store is real SQLite; the target driver is a stub
// that answers "who is logged in" as the test says (the e2e tests boot real initiators).

const log = pino({ level: "silent" });
const MAC = "52:54:00:bf:11:01";

function fixture(t: { teardown(fn: () => void): void }) {
  let now = Date.parse("2026-12-02T10:00:00.000Z");
  const clock = () => now;
  const store = Store.open(
    { path: join(tempDir(t, "bf-logins-"), "bf.db"), busyTimeoutMs: 2000 },
    clock,
  );
  t.teardown(() => store.close());
  const image = store.images.create({ name: "golden", filename: "golden.raw", status: "ready" });
  const machine = store.machines.create({ name: "pc-1", mac_address: MAC });
  const target = (n: string) =>
    store.targets.create({
      name: `pc-1-${n}`,
      iqn: `iqn.2024-01.io.bootfleet:pc-1-${n}`,
      portal_ip: "10.99.0.1",
      machine_id: machine.id,
      system_image_id: image.id,
      initiator_iqn: "iqn.2024-01.io.bootfleet.client:pc-1",
      chap_username: "pc-1",
      chap_password: "chap-secret-1",
      is_active: 1,
    });
  const system = target("system");
  /** The IQNs of the targets the PC's initiator is logged in to now. */
  const loggedIn = new Set<string>();
  const driver = {
    name: "tgt",
    firstLun: 1,
    sessions: async (iqn: string): Promise<TargetSession[]> =>
      loggedIn.has(iqn) ? [{ initiatorIqn: system.initiator_iqn }] : [],
  } as unknown as TargetDriver;
  const bus = new EventBus();
  const events: { type: string; session_id?: string }[] = [];
  bus.on((e) => {
    if (e.type === "session_started" || e.type === "session_stopped") {
      events.push({ type: e.type, session_id: e.payload.session_id });
    }
  });
  const reconciler = new Reconciler({
    store,
    targets: driver,
    overlays: {} as OverlayDriver,
    log,
    imagePath: () => undefined,
    portal: { address: "10.99.0.1", port: 3260 },
    clock,
    bus,
  });
  const fleet = new FleetMonitor({ store, log, bus, clock, stallAfterMs: 3_600_000 });
  fleet.evaluate();
  t.teardown(() => fleet.stop());
  const timeline = new BootTimeline({ store, log, macForIp: async () => MAC });
  return {
    store,
    machine,
    system,
    target,
    timeline,
    events,
    advance: (ms: number) => {
      now += ms;
    },
    /** One poll of the logins, then the fleet's view of it. */
    poll: async (...iqns: string[]) => {
      loggedIn.clear();
      for (const iqn of iqns) loggedIn.add(iqn);
      await reconciler.pollSessions();
      fleet.evaluate();
    },
    /** The firmware's PXE phase: a DHCP offer, iPXE over TFTP, its script. */
    pxeBoot: async () => {
      timeline.replied(
        machine,
        {
          client: discover(MAC),
          ifname: "br0",
          serverAddress: "10.99.0.1",
          sourceAddress: "0.0.0.0",
          port: 67,
        },
        "offer",
      );
      timeline.flushOffers();
      await timeline.transferred({
        file: "undionly.kpxe",
        bytes: 70_000,
        durationMs: 120,
        clientAddress: "10.99.0.50",
        clientPort: 2070,
        ok: true,
      });
      timeline.scriptServed(store.machines.get(machine.id), "10.99.0.50", "sanboot");
    },
    sessions: () =>
      store.sessions.listRows(
        { skip: 0, limit: 50, sort: "id", order: "asc" },
        { machine_id: machine.id },
      ).rows,
    state: () => fleet.stateOf(machine.id).state,
  };
}

t.test("the booted OS's logins join the boot's session", async (t) => {
  const f = fixture(t);
  const iqn = f.system.iqn;
  await f.pxeBoot();
  f.advance(2_000);
  await f.poll(iqn); // iPXE's sanboot
  const boot = f.sessions()[0]!;
  t.match(boot, { status: "active", boot_method: "bios", iscsi_logins: 1, target_id: f.system.id });
  const firstLogin = boot.iscsi_login_at;
  t.ok(boot.dhcp_offer_at && boot.tftp_done_at && boot.script_served_at && firstLogin);

  // The kernel starts: iPXE's login is gone until the initramfs logs in.
  f.advance(30_000);
  await f.poll();
  t.match(f.sessions()[0], { status: "stopped", iscsi_logout_at: /Z$/ }, "the logout is seen");
  t.equal(f.state(), "off", "no initiator logged in: the machine shows off meanwhile");
  f.advance(45_000);
  await f.poll(iqn); // the initramfs's iscsistart
  f.advance(20_000);
  await f.poll(); // iscsid at start-up logs out and in again
  f.advance(5_000);
  await f.poll(iqn);

  const rows = f.sessions();
  t.equal(rows.length, 1, "one boot, one session");
  const s = rows[0]!;
  t.equal(s.session_id, boot.session_id);
  t.match(s, { status: "active", ended_at: null, iscsi_logout_at: null, iscsi_logins: 3 });
  t.equal(s.iscsi_login_at, firstLogin, "the boot's login phase stays iPXE's");
  t.equal(s.iscsi_relogin_at, new Date(Date.parse(firstLogin!) + 100_000).toISOString());
  t.equal(f.state(), "iscsi_logged_in", "live again");
  t.same(
    f.events.map((e) => `${e.type} ${e.session_id === boot.session_id ? "boot" : e.session_id}`),
    [
      "session_started boot",
      "session_stopped boot",
      "session_started boot",
      "session_stopped boot",
      "session_started boot",
    ],
    "each gap is a stop and a start of the same session, never a new one",
  );

  // The OS shuts down: the session ends at the logout, and stays ended.
  f.advance(3_600_000);
  await f.poll();
  t.match(f.sessions()[0], { status: "stopped", iscsi_logins: 3 });
  t.equal(f.state(), "off");
});

t.test("a new PXE phase starts a new session; so does a login long after", async (t) => {
  const f = fixture(t);
  const iqn = f.system.iqn;
  await f.pxeBoot();
  await f.poll(iqn);
  // Reset while logged in: the next boot's DHCP offer ends the running session.
  f.advance(600_000);
  await f.pxeBoot();
  let rows = f.sessions();
  t.equal(rows.length, 2, "the PXE phase opened the second boot's session");
  t.match(
    rows[0],
    { status: "stopped", iscsi_logout_at: null },
    "the first ended by the PXE phase",
  );
  t.match(rows[1], { status: "starting", iscsi_logins: 0 });
  // tgtd still shows the first boot's login (dead, not yet timed out): it is this boot's
  // now, since a login is counted on the current session.
  await f.poll(iqn);
  t.match(f.sessions()[1], { status: "active", iscsi_logins: 1 });
  f.advance(10_000);
  await f.poll();
  await f.poll(iqn);
  rows = f.sessions();
  t.equal(rows.length, 2, "the second boot's re-login joined it, not the first");
  t.match(rows[0], { status: "stopped", iscsi_logins: 1 }, "the first boot is untouched");
  t.match(rows[1], { status: "active", iscsi_logins: 2 });

  // Logged out, then a login at the edge of the window: still this boot.
  await f.poll();
  f.advance(RELOGIN_WINDOW_MS);
  await f.poll(iqn);
  t.equal(f.sessions().length, 2, `a login ${RELOGIN_WINDOW_MS / 1000} s after the logout joins`);
  t.match(f.sessions()[1], { status: "active", iscsi_logins: 3 });

  // Past the window: a login bootfleet saw no boot for, in a session of its own.
  await f.poll();
  f.advance(RELOGIN_WINDOW_MS + 1);
  await f.poll(iqn);
  rows = f.sessions();
  t.equal(rows.length, 3, "a login past the window opens its own session");
  t.match(rows[1], { status: "stopped", iscsi_logins: 3 }, "and leaves the boot ended");
  t.match(rows[2], { status: "active", boot_method: "iscsi", iscsi_logins: 1 });
});

t.test("an ended session is joined only by its own target, after its own logout", async (t) => {
  const f = fixture(t);
  const other = f.target("data");
  await f.pxeBoot();
  await f.poll(f.system.iqn);
  await f.poll();
  // Another target of the machine: not this boot's disk.
  await f.poll(other.iqn);
  let rows = f.sessions();
  t.equal(rows.length, 2, "a login to another target is not the boot's");
  t.match(rows[0], { status: "stopped", iscsi_logins: 1 });
  t.match(rows[1], { boot_method: "iscsi", target_id: other.id });
  await f.poll();

  // An operator ended the session while the PC was logged in: not taken back.
  await f.pxeBoot();
  await f.poll(f.system.iqn);
  const third = f.sessions()[2]!;
  f.store.sessions.end(third.id, "stopped");
  f.advance(1_000);
  await f.poll(f.system.iqn);
  t.equal(f.store.sessions.current(f.machine.id), undefined, "the same login does not reopen it");
  f.advance(1_000);
  await f.poll();
  t.ok(f.store.sessions.get(third.id)!.iscsi_logout_at, "its logout is stamped");
  await f.poll(f.system.iqn);
  rows = f.sessions();
  t.equal(rows.length, 4, "a login after an operator's stop is a session of its own");
  t.match(rows[2], { status: "stopped", iscsi_logins: 1 });

  // A session that failed is not joined either.
  await f.poll();
  f.store.sessions.update(rows[3]!.id, { error: "power on failed" });
  await f.poll(f.system.iqn);
  t.equal(f.sessions().length, 5, "a failed session stays ended");
});
