import { join } from "node:path";
import t from "tap";
import { createApi } from "../../src/api/app.js";
import { hashPassword } from "../../src/api/auth/password.js";
import { webRoutes } from "../../src/api/web.js";
import { startHttpServer } from "../../src/daemon/http-server.js";
import { EventBus } from "../../src/events/bus.js";
import { EventStreams } from "../../src/events/streams.js";
import { SnapshotService } from "../../src/images/snapshots.js";
import { VersionService, type VersionStorage } from "../../src/images/versions.js";
import { JobRunner } from "../../src/jobs/runner.js";
import { Store } from "../../src/store/index.js";
import { HIGH_LIMITS } from "../api/helpers.js";
import { REPO, tempDir } from "../helpers/daemon.js";
import { silent } from "../jobs/helpers.js";
import {
  axeViolations,
  browserSkipReason,
  launchBrowser,
  loginThroughForm,
  screenshotDir,
  watchedPage,
} from "./helpers.js";

/**
 * The daemon's API in this process with the real version and snapshot services, their disk
 * side faked (the clones are test/images/versions.test.ts's and the e2e update cycle's to
 * prove; this test proves the screens), the event stream, and the built dashboard.
 */
async function cycleServer(t: Parameters<typeof tempDir>[0]) {
  const dir = tempDir(t, `bf-web-cycle-${process.pid}-`);
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  const bus = new EventBus();
  const events = new EventStreams({ bus, heartbeatMs: 15_000, maxQueue: 256 });
  const jobs = new JobRunner({ store, log: silent, bus });
  const versions = new VersionService({ store, log: silent, runner: jobs, bus, keepVersions: 5 });
  const disk: string[] = [];
  const storage: VersionStorage = {
    freeze: async (draft, name) => {
      disk.push(`freeze ${draft}`);
      return { path: `/fake/${name}.qcow2`, sizeBytes: 4096 };
    },
    deleteDraft: async () => {},
    deleteVersion: async () => {},
    isLive: async () => false,
    resetTarget: async () => {},
    retarget: async () => {},
    cloneOverlay: async (targetId, name) => {
      disk.push(`clone t${targetId}`);
      return { path: `/fake/${name}.qcow2`, sizeBytes: 8192 };
    },
    restoreOverlay: async (targetId, _path, version) => {
      store.targets.update(targetId, { overlay_version: version });
    },
    collectGarbage: async () => {
      for (const g of store.storageGarbage.pending()) store.storageGarbage.done(g.id);
    },
  };
  versions.attach(storage);
  const snapshots = new SnapshotService({ store, log: silent, versions });
  const { app } = createApi({
    log: silent,
    version: "test",
    state: () => "ready",
    store,
    signingKey: new Uint8Array(32).map((_, i) => (i * 29 + 3) & 0xff),
    rateLimits: HIGH_LIMITS,
    services: { events, jobs, versions, snapshots },
  });
  app.route("/", webRoutes(join(REPO, "dist/web")) as unknown as typeof app);
  const server = await startHttpServer({ fetch: app.fetch, listen: "127.0.0.1:0", log: silent });
  t.teardown(async () => {
    events.closeAll();
    await server.close(1000);
    await jobs.stop(5000);
    store.close();
  });
  return { base: `http://127.0.0.1:${server.address.port}`, store, disk };
}

/**
 * The update cycle and writeback snapshots in a real browser: an admin opens an update on
 * a super-client, commits it (version 2 becomes current on the open page), rolls back to
 * 1; takes, sees and deletes a snapshot of a persistent machine; a viewer sees the same
 * pages with no button that acts; both pages pass axe-core.
 */
t.test(
  "dashboard: the update cycle and writeback snapshots",
  { skip: browserSkipReason() ?? false },
  async (t) => {
    const s = await cycleServer(t);
    const shots = screenshotDir(t);
    const pw = "Correct-horse-42";
    for (const [username, role] of [
      ["ada", "admin"],
      ["vera", "viewer"],
    ] as const) {
      s.store.users.create({ username, role, password_hash: await hashPassword(pw) });
    }
    const image = s.store.images.create({
      name: "win-lab",
      filename: "win-lab.raw",
      status: "ready",
    });
    s.store.images.addVersion(image.id, { path: "/fake/win-lab.raw", note: "imported" });
    const machine = (name: string, mac: string, policy: "persistent" | "reset") => {
      const m = s.store.machines.create({ name, mac_address: mac, overlay_policy: policy });
      const target = s.store.targets.create({
        name: `${name.toLowerCase()}-t`,
        iqn: `iqn.2024-01.test:${name.toLowerCase()}`,
        portal_ip: "10.0.0.1",
        machine_id: m.id,
        system_image_id: image.id,
        initiator_iqn: `iqn.2024-01.test:c-${name.toLowerCase()}`,
        chap_username: `u-${name.toLowerCase()}`,
        chap_password: "Secret0123456789",
        overlay_version: 1,
      });
      return { machine: m, target };
    };
    const superPc = machine("SUPER-PC", "52:54:00:cc:00:01", "reset");
    const lab = machine("LAB-PC-07", "52:54:00:cc:00:02", "persistent");

    const browser = await launchBrowser(t);

    await t.test("admin: update, commit, rollback; snapshot taken and deleted", async (t) => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      t.teardown(() => context.close());
      const w = await watchedPage(context);
      const page = w.page;
      page.setDefaultTimeout(20_000);
      page.on("dialog", (d) => void d.accept());
      await loginThroughForm(page, s.base, "ada", pw);
      await page.locator(".live-live").waitFor();
      await page.evaluate("window.bfMarker = 42");

      await page
        .getByRole("navigation", { name: "Main" })
        .getByRole("link", { name: "Images" })
        .click();
      await page.getByRole("cell", { name: "win-lab" }).waitFor();
      await page.getByRole("button", { name: "Versions" }).click();
      const versions = page.locator(".versions table", { hasText: "Versions of win-lab" });
      await versions.locator("tr", { hasText: "1 (current)" }).waitFor();
      t.pass("version 1 is current");
      await page.getByText("No open update.").waitFor();

      // The select offers the machines that boot the image.
      await page.getByLabel("Super-client").selectOption({ label: "SUPER-PC" });
      await page.getByLabel("Comment").fill("monthly patches");
      await page.getByRole("button", { name: "Open update" }).click();
      const open = page.locator(".update-open");
      await open.getByRole("heading", { name: /^Open update \d+$/ }).waitFor();
      t.match(await open.textContent(), /SUPER-PC/, "the open update names its super-client");
      t.match(await open.textContent(), /draft not booted yet/, "and that nothing is booted yet");
      const update = s.store.imageUpdates.openFor(image.id);
      t.ok(update, "the API opened the update");

      // A refusal shows the API's words: a draft never booted has nothing to commit.
      await open.getByLabel(/What changed/).fill("patched");
      await open.getByRole("button", { name: "Commit" }).click();
      await open
        .getByRole("alert")
        .filter({ hasText: /has not booted the draft yet/ })
        .waitFor();
      t.pass("a refused commit shows the API's reason");

      // The super-client boots its draft (the iSCSI side records it at its login).
      s.store.imageUpdates.markBooted(update!.id);
      await open.getByLabel(/What changed/).fill("patched");
      await open.getByRole("button", { name: "Commit" }).click();
      await versions.locator("tr", { hasText: "2 (current)" }).waitFor();
      t.match(
        await versions.locator("tr", { hasText: "2 (current)" }).textContent(),
        /patched/,
        "version 2 is current, with its comment",
      );
      await page.getByText("No open update.").waitFor();
      t.equal(
        (
          await page
            .locator("table tbody tr", { hasText: "win-lab" })
            .locator("td.num")
            .allTextContents()
        )[1],
        "2",
        "the image list shows version 2",
      );
      t.same(s.disk.filter((d) => d.startsWith("freeze")).length, 1, "one draft frozen");
      await page.screenshot({ path: join(shots, "cycle-images.png"), fullPage: true });

      await versions.getByRole("button", { name: "Roll back to 1" }).click();
      await versions.locator("tr", { hasText: "1 (current)" }).waitFor();
      t.equal(s.store.images.get(image.id)?.current_version, 1, "the API rolled back to 1");
      t.ok(
        await versions.getByRole("button", { name: "Roll back to 2" }).isVisible(),
        "and version 2 can be made current again",
      );

      // The events move the open page: an update opened elsewhere appears without a reload.
      const other = await fetch(`${s.base}/api/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "ada", password: pw }),
      });
      const token = ((await other.json()) as { access_token: string }).access_token;
      const res = await fetch(`${s.base}/api/images/${image.id}/updates`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ machine_id: superPc.machine.id, comment: "from the shell" }),
      });
      t.equal(res.status, 201, "an update opened through the API");
      await open.getByRole("heading", { name: /^Open update \d+$/ }).waitFor();
      t.pass("the open update appeared from the event stream");
      const again = await fetch(`${s.base}/api/images/${image.id}/updates`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ machine_id: superPc.machine.id }),
      });
      t.equal(again.status, 409, "one open update per image");
      await versions.getByRole("button", { name: "Roll back to 2" }).click();
      await versions
        .getByRole("status")
        .filter({ hasText: /open update \d+ on machine SUPER-PC: commit or discard it/ })
        .waitFor();
      t.pass("a refused rollback shows the API's reason (409)");
      await open.getByRole("button", { name: "Discard" }).click();
      await page.getByText("No open update.").waitFor();
      t.equal(s.store.imageUpdates.openFor(image.id), undefined, "the update was discarded");

      // The machine page of a persistent machine: versions, snapshots, promote.
      await page.evaluate(`location.hash = "#/machines/${lab.machine.id}"`);
      await page.getByRole("heading", { level: 1, name: "LAB-PC-07" }).waitFor();
      const disk = page.locator(".target");
      await disk.getByText("the current version (not pinned)").waitFor();
      await disk.getByText("No snapshots.").waitFor();
      await disk.getByLabel("Snapshot comment").fill("before the driver update");
      await disk.getByRole("button", { name: "Take snapshot" }).click();
      const row = disk.locator("table.snapshots tbody tr", { hasText: "before the driver update" });
      await row.waitFor();
      t.match(await row.textContent(), /by ada/, "the snapshot is listed with who took it");
      t.equal(s.store.targetSnapshots.list(lab.target.id).length, 1, "the API has it");
      for (const name of ["Restore", "Delete", "Promote to a new version", "Pin"]) {
        t.ok(await disk.getByRole("button", { name }).isVisible(), `admin sees "${name}"`);
      }
      await page.screenshot({ path: join(shots, "cycle-machine.png"), fullPage: true });
      await row.getByRole("button", { name: "Restore" }).click();
      await row.getByRole("status").filter({ hasText: "restored" }).waitFor();
      t.pass("the snapshot was restored (after a confirm)");
      // Pinned to version 2 (current is 1 after the rollback): one version behind.
      await disk.getByLabel("Version to boot").selectOption("2");
      await disk.getByRole("button", { name: "Pin" }).click();
      await disk.getByText("version 2 (pinned)").waitFor();
      t.match(
        await disk.locator("dd", { hasText: /^1 — a reset/ }).textContent(),
        /^1 — a reset of its overlay brings it up to date/,
        "one version behind the pinned version",
      );
      t.equal(s.store.targets.get(lab.target.id)?.system_image_version, 2, "pinned in the API");
      await row.getByRole("button", { name: "Delete" }).click();
      await disk.getByText("No snapshots.").waitFor();
      t.equal(s.store.targetSnapshots.list(lab.target.id).length, 0, "deleted in the API");

      // A reset-on-reboot machine: no writeback, so nothing to snapshot or promote.
      await page.evaluate(`location.hash = "#/machines/${superPc.machine.id}"`);
      await page.getByRole("heading", { level: 1, name: "SUPER-PC" }).waitFor();
      await page.getByText(/resets its overlay at every boot/).waitFor();
      t.equal(
        await page.getByRole("button", { name: "Take snapshot" }).count(),
        0,
        "no snapshot button for a reset-on-reboot machine",
      );
      t.ok(await page.evaluate("window.bfMarker === 42"), "no reload along the way");
      t.same(w.cspViolations, [], "no CSP violation");
    });

    await t.test("viewer: the same pages, no button that acts", async (t) => {
      // A snapshot to list (taken as the API would, by the service).
      s.store.targetSnapshots.create({
        target_id: lab.target.id,
        image_id: image.id,
        image_version: 1,
        path: "/fake/snap.qcow2",
        size_bytes: 8192,
        comment: "kept",
        created_by: null,
      });
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      t.teardown(() => context.close());
      const w = await watchedPage(context);
      const page = w.page;
      page.setDefaultTimeout(20_000);
      await loginThroughForm(page, s.base, "vera", pw);
      await page.evaluate('location.hash = "#/images"');
      await page.getByRole("button", { name: "Versions" }).click();
      await page.locator(".versions tr", { hasText: "1 (current)" }).waitFor();
      await page.getByText("No open update.").waitFor();
      t.same(
        await page.locator("main button").allTextContents(),
        ["Versions"],
        "only the toggle: no rollback, open, commit or discard",
      );
      t.equal(await page.locator("main form").count(), 0, "no form");
      await page.evaluate(`location.hash = "#/machines/${lab.machine.id}"`);
      await page.getByRole("heading", { level: 1, name: "LAB-PC-07" }).waitFor();
      await page.locator("table.snapshots tr", { hasText: "kept" }).waitFor();
      t.equal(await page.locator("main button").count(), 0, "no button on the machine page");
      t.equal(await page.locator("main form").count(), 0, "no form on the machine page");
      t.same(w.cspViolations, [], "no CSP violation");
    });

    await t.test("axe-core: the images and machine pages", async (t) => {
      // axe's script needs a context that bypasses the CSP, for this only.
      const context = await browser.newContext({
        bypassCSP: true,
        viewport: { width: 1280, height: 900 },
      });
      t.teardown(() => context.close());
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      await loginThroughForm(page, s.base, "ada", pw);
      await page.evaluate('location.hash = "#/images"');
      await page.getByRole("button", { name: "Versions" }).click();
      await page.getByRole("button", { name: "Open update" }).waitFor();
      t.same(
        await axeViolations(page),
        [],
        "images with versions: no serious or critical violation",
      );
      await page.evaluate(`location.hash = "#/machines/${lab.machine.id}"`);
      await page.getByRole("button", { name: "Take snapshot" }).waitFor();
      await page.locator("table.snapshots tr", { hasText: "kept" }).waitFor();
      t.same(
        await axeViolations(page),
        [],
        "machine with snapshots: no serious or critical violation",
      );
    });
  },
);
