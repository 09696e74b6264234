import { join } from "node:path";
import { Store } from "../../src/store/index.js";
import {
  axeViolations,
  dashboardTest,
  launchBrowser,
  loginThroughForm,
  screenshotDir,
  watchedPage,
} from "./helpers.js";

/**
 * The dashboard in a real browser against the built daemon, as an admin: served with a
 * strict CSP and nothing breaking it, machines created through the API show up on the
 * grid without a reload, events move the pages without a reload, every page renders and
 * passes axe-core without serious or critical violations.
 */
dashboardTest("dashboard: an admin's fleet, live, under a strict CSP", async (t, d) => {
  const shots = screenshotDir(t);
  const machine = (name: string, mac: string, room: string, ip: string) =>
    d.api<{ id: number }>("POST", "/machines", {
      name,
      mac_address: mac,
      location: "Lab",
      room,
      ip_address: ip,
    });
  const pc1 = await machine("LAB-PC-01", "52:54:00:aa:01:01", "Room 101", "10.0.0.11");
  await machine("LAB-PC-02", "52:54:00:aa:01:02", "Room 101", "10.0.0.12");
  await machine("LAB-PC-03", "52:54:00:aa:02:01", "Room 102", "10.0.0.21");

  // What the daemon serves, before any browser: types, CSP, caching, compression.
  const index = await fetch(`${d.base}/`, { headers: { "accept-encoding": "gzip" } });
  t.equal(index.status, 200);
  t.match(index.headers.get("content-type"), /^text\/html; charset=utf-8/);
  const csp = index.headers.get("content-security-policy") ?? "";
  t.match(csp, /default-src 'self'/, "CSP names default-src 'self'");
  t.match(csp, /script-src 'self'(;|$)/, "scripts from this origin only");
  t.match(csp, /style-src 'self'(;|$)/, "styles from this origin only");
  t.notMatch(csp, /unsafe-inline|unsafe-eval|https?:/, "no inline, no eval, no other host");
  t.equal(index.headers.get("cache-control"), "no-cache", "index.html revalidated on each load");
  t.equal(index.headers.get("x-content-type-options"), "nosniff");
  const html = await index.text();
  t.notMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, "no inline script");
  t.notMatch(html, /<style|\sstyle=/, "no inline style");
  t.notMatch(html, /https?:\/\//, "no asset from another host (offline)");
  const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
  t.equal(assets.length, 3, "script, style sheet and icon");
  for (const path of assets) {
    const res = await fetch(`${d.base}${path}`);
    t.equal(res.status, 200, path);
    t.match(res.headers.get("cache-control"), /max-age=31536000, immutable/, `${path} cached`);
    const type = res.headers.get("content-type") ?? "";
    if (path.endsWith(".js")) t.match(type, /^text\/javascript/, "JavaScript type");
    if (path.endsWith(".css")) t.match(type, /^text\/css/, "CSS type");
    if (path.endsWith(".svg")) t.match(type, /^image\/svg\+xml/, "SVG type");
    if (path.endsWith(".js")) t.equal(res.headers.get("content-encoding"), "gzip", "compressed");
  }
  t.equal((await fetch(`${d.base}/assets/..%2findex.html`)).status, 404, "only listed assets");
  t.equal((await fetch(`${d.base}/api/nothing-here`)).status, 404, "the API's 404 stays the API's");

  const browser = await launchBrowser(t);
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const w = await watchedPage(context);
  const page = w.page;
  page.setDefaultTimeout(20_000);
  await loginThroughForm(page, d.base, "admin", d.adminPassword);

  const tile = (name: string) => page.locator("li.tile", { hasText: name });
  await tile("LAB-PC-03").waitFor();
  t.equal(await page.locator("li.tile").count(), 3, "three tiles");
  t.equal(await page.locator("section.room h2").count(), 2, "two rooms");
  t.equal(
    await page.locator("section.room", { hasText: "Room 101" }).locator("li.tile").count(),
    2,
    "Room 101 has its two machines",
  );
  await page.locator(".live-live").waitFor();
  t.pass("the event stream is connected");
  t.same(await context.cookies(), [], "no cookie: nothing another site could make us send");
  const stored = await page.evaluate(
    "({ session: Object.keys(sessionStorage), local: Object.keys(localStorage) })",
  );
  t.same(stored, { session: ["bootfleet.refresh_token"], local: [] }, "only the refresh token");
  await page.screenshot({ path: join(shots, "fleet.png"), fullPage: true });

  // From here on the page is never reloaded: a marker in the window would not survive one.
  await page.evaluate("window.bfMarker = 42");
  const notReloaded = async () => (await page.evaluate("window.bfMarker")) === 42;

  await machine("LAB-PC-04", "52:54:00:aa:02:02", "Room 102", "10.0.0.22");
  await tile("LAB-PC-04").waitFor({ timeout: 40_000 });
  t.ok(await notReloaded(), "a machine created through the API appeared without a reload");

  // Events: an upload's job progress and the image_uploaded event move the pages.
  await page.getByRole("link", { name: "Jobs" }).click();
  await page.getByRole("heading", { level: 1, name: "Jobs" }).waitFor();
  await page.getByText("No jobs yet.").waitFor();
  const form = new FormData();
  form.set("name", "win-lab");
  form.set("image_type", "system");
  form.set("file", new Blob([Buffer.alloc(1 << 20, 7)]), "win-lab.raw");
  const up = await fetch(`${d.base}/api/images/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${d.adminToken}` },
    body: form,
  });
  t.equal(up.status, 201, "image uploaded through the API");
  const { job_id: jobId } = (await up.json()) as { job_id: number };
  const jobRow = page.locator("tr", { has: page.getByRole("link", { name: `Job ${jobId}` }) });
  await jobRow.locator("td.job-succeeded").waitFor({ timeout: 60_000 });
  t.equal(
    await jobRow.locator("progress").getAttribute("value"),
    "100",
    "the job's progress bar reached 100 without a reload",
  );
  await page.screenshot({ path: join(shots, "jobs.png"), fullPage: true });
  await jobRow.getByRole("link").click();
  await page.getByRole("heading", { level: 1, name: `Job ${jobId}` }).waitFor();
  await page.locator("pre.log", { hasText: "virtual size" }).waitFor();
  t.pass("the job's log streamed into the page");
  await page.screenshot({ path: join(shots, "job.png"), fullPage: true });

  await page.getByRole("link", { name: "Images" }).click();
  await page.getByRole("cell", { name: "win-lab" }).waitFor();
  await page.getByRole("button", { name: "Versions" }).click();
  await page.locator(".versions table", { hasText: "1 (current)" }).waitFor();
  t.pass("the image's versions come from the API: version 1 is current");
  await page.screenshot({ path: join(shots, "images.png"), fullPage: true });
  t.ok(await notReloaded(), "jobs and images followed the events without a reload");

  // The machine page: details, power, boot settings, a boot session on the timeline.
  const target = await d.api<{ id: number }>("POST", "/targets", {
    machine_id: pc1.id,
    system_image_id: (await d.api<{ id: number }[]>("GET", "/images"))[0]!.id,
  });
  t.ok(target.id > 0, "a target for LAB-PC-01");
  // An earlier boot with every phase, written beside the daemon as its netboot and iSCSI
  // services record one (no PC boots in this test), then the API's own session.
  const store = Store.open({ path: join(d.dataDir, "bootfleet.db"), busyTimeoutMs: 5000 });
  const at = (s: number) => new Date(Date.parse("2026-01-05T08:00:00Z") + s * 1000).toISOString();
  store.sessions.start({
    machine_id: pc1.id,
    target_id: target.id,
    status: "stopped",
    started_at: at(0),
    dhcp_offer_at: at(0.4),
    tftp_done_at: at(2.1),
    script_served_at: at(2.6),
    iscsi_login_at: at(9.8),
    iscsi_relogin_at: at(41.3),
    iscsi_logins: 3,
    iscsi_logout_at: at(3600),
    ended_at: at(3600),
  });
  store.close();
  await d.api("POST", "/sessions/start", { target_id: target.id, client_ip: "10.0.0.11" });
  await page.getByRole("link", { name: "Fleet" }).click();
  await tile("LAB-PC-01").getByRole("link", { name: "LAB-PC-01" }).click();
  await page.getByRole("heading", { level: 1, name: "LAB-PC-01" }).waitFor();
  for (const name of ["Power on", "Power off", "Power cycle", "Query power", "Save"]) {
    t.ok(await page.getByRole("button", { name }).isVisible(), `admin sees "${name}"`);
  }
  const boots = page.locator("table.timeline tbody tr");
  await boots.nth(1).waitFor();
  t.equal(await boots.count(), 2, "two boots on the timeline");
  t.equal(await boots.nth(1).locator("svg.phasebar rect").count(), 4, "four phases drawn");
  t.same(
    (await boots.nth(1).locator("td.num").allTextContents()).map((s) => s.trim()),
    ["400 ms", "1.7 s", "500 ms", "7.2 s", "9.8 s", "3 · OS 41 s", "60 min 0 s"],
    "each phase's duration, the boot's, its disk logins (the OS's last) and the session's",
  );
  await page.locator(".target dd.mono", { hasText: "iqn." }).waitFor();
  await page.screenshot({ path: join(shots, "machine.png"), fullPage: true });

  for (const [link, heading, file] of [
    ["Rooms", "Rooms", "rooms.png"],
    ["Alerts", "Alerts", "alerts.png"],
    ["History", "History", "history.png"],
    ["Storage", "Storage", "storage.png"],
    ["Users", "Users", "users.png"],
    ["Configuration", "Configuration", "config.png"],
  ] as const) {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: link }).click();
    await page.getByRole("heading", { level: 1, name: heading }).waitFor();
    await page.locator("p.muted", { hasText: "Loading" }).waitFor({ state: "detached" });
    await page.screenshot({ path: join(shots, file), fullPage: true });
  }
  // Filters chosen while the list is still loading stay chosen when it arrives (the page
  // re-renders then): the list's answer held back 1 s.
  let held = 0;
  await page.route("**/api/history?*", async (route) => {
    held++;
    await new Promise((r) => setTimeout(r, 1000));
    await route.continue();
  });
  await page
    .getByRole("navigation", { name: "Main" })
    .getByRole("link", { name: "History" })
    .click();
  await page.getByLabel("Result").selectOption("success");
  await page.getByLabel("Resource").selectOption("machine");
  await page.getByRole("caption").waitFor();
  t.ok(held > 0, "the list was held back while the filters were chosen");
  t.same(
    [await page.getByLabel("Result").inputValue(), await page.getByLabel("Resource").inputValue()],
    ["success", "machine"],
    "the filters chosen while it loaded survive its arrival",
  );
  await page.unroute("**/api/history?*");
  await page.getByRole("button", { name: "Filter" }).click();
  await page
    .getByRole("caption")
    .filter({ hasText: /^4 operations/ })
    .waitFor();
  t.pass("history filtered to the four machine creations");
  t.ok(await notReloaded(), "no page of the tour reloaded the app");

  // Bulk actions on a room: one job for the selection, named on the bar.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Fleet" }).click();
  await page.getByLabel("Select all in Lab · Room 102").check();
  const bulk = page.getByRole("region", { name: "Bulk actions" });
  await bulk.getByText("2 selected").waitFor();
  await bulk.getByRole("button", { name: "Power on" }).click();
  await bulk.getByText(/started job \d+/).waitFor();
  t.pass("a bulk power-on of a room starts one job, named on the bar");
  await page.screenshot({ path: join(shots, "fleet-bulk.png"), fullPage: true });
  t.same(w.cspViolations, [], "no CSP violation on any page");

  // A reload resumes the tab's session with one refresh, which rotates the refresh token.
  const refreshToken = "sessionStorage.getItem('bootfleet.refresh_token')";
  const before = await page.evaluate(refreshToken);
  await page.reload();
  await page.getByRole("heading", { level: 1, name: "Fleet" }).waitFor();
  t.equal(await page.getByLabel("Password").count(), 0, "no login form after a reload");
  const after = await page.evaluate(refreshToken);
  t.ok(typeof after === "string" && after !== before, "the refresh token rotated");
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("Password").waitFor();
  t.equal(await page.evaluate("sessionStorage.length"), 0, "logging out forgets the token");

  // axe-core needs its script in the page: a context that bypasses the CSP, for this only.
  const axeContext = await browser.newContext({
    bypassCSP: true,
    viewport: { width: 1280, height: 860 },
  });
  const axePage = await axeContext.newPage();
  axePage.setDefaultTimeout(20_000);
  await axePage.goto(`${d.base}/`);
  await axePage.getByLabel("Password").waitFor();
  t.same(await axeViolations(axePage), [], "login page: no serious or critical violation");
  await axePage.getByLabel("User name or email").fill("admin");
  await axePage.getByLabel("Password").fill(d.adminPassword);
  await axePage.getByRole("button", { name: "Log in" }).click();
  for (const [hash, heading] of [
    ["#/fleet", "Fleet"],
    [`#/machines/${pc1.id}`, "LAB-PC-01"],
    ["#/rooms", "Rooms"],
    ["#/images", "Images"],
    ["#/jobs", "Jobs"],
    [`#/jobs/${jobId}`, `Job ${jobId}`],
    ["#/alerts", "Alerts"],
    ["#/history", "History"],
    ["#/storage", "Storage"],
    ["#/users", "Users"],
    ["#/config", "Configuration"],
  ] as const) {
    await axePage.evaluate(`location.hash = ${JSON.stringify(hash)}`);
    await axePage.getByRole("heading", { level: 1, name: heading }).waitFor();
    await axePage.locator("p.muted", { hasText: "Loading" }).waitFor({ state: "detached" });
    t.same(await axeViolations(axePage), [], `${heading}: no serious or critical violation`);
  }
  await axeContext.close();
  await context.close();
  t.comment(`screenshots in ${shots}`);
});
