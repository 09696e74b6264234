import { join } from "node:path";
import type { Test } from "tap";
import {
  dashboardTest,
  launchBrowser,
  loginThroughForm,
  screenshotDir,
  watchedPage,
} from "./helpers.js";

/**
 * Roles in the browser: a viewer sees the fleet and no button that acts, and the API
 * refuses the action when forced; a client sees only its own machines. Five logins in all
 * (the contract's auth limit per address is five per five minutes).
 */
dashboardTest("dashboard: a viewer cannot act, a client sees its own", async (t, d) => {
  const shots = screenshotDir(t);
  const pw = "Correct-horse-42";
  await d.api("POST", "/users", { username: "vera", role: "viewer", password: pw });
  const carl = await d.api<{ id: number }>("POST", "/users", {
    username: "carl",
    role: "client",
    password: pw,
  });
  const lab = await d.api<{ id: number }>("POST", "/machines", {
    name: "LAB-PC-01",
    mac_address: "52:54:00:bb:01:01",
    room: "Room 101",
  });
  const own = await d.api<{ id: number }>("POST", "/machines", {
    name: "CARL-PC",
    mac_address: "52:54:00:bb:02:01",
    room: "Office",
    owner_user_id: carl.id,
  });

  const browser = await launchBrowser(t);
  /** A page of its own (a fresh context: no session of another role). */
  const openPage = async (t: Test) => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    t.teardown(() => context.close());
    const w = await watchedPage(context);
    w.page.setDefaultTimeout(20_000);
    return { w, page: w.page };
  };

  await t.test("viewer", async (t) => {
    const { w, page } = await openPage(t);
    // By keyboard alone: Tab to the form, type, Enter; focus then follows each page.
    await page.goto(`${d.base}/`);
    await page.getByLabel("Password").waitFor();
    await page.keyboard.press("Tab");
    t.equal(await page.evaluate("document.activeElement.id"), "username", "Tab: user name");
    await page.keyboard.type("vera");
    await page.keyboard.press("Tab");
    await page.keyboard.type(pw);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { level: 1, name: "Fleet" }).waitFor();
    await page.locator("li.tile", { hasText: "CARL-PC" }).waitFor();
    await page.keyboard.press("Tab");
    t.equal(
      await page.evaluate("document.activeElement.textContent"),
      "CARL-PC",
      "Tab from the page's heading reaches the first tile",
    );
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { level: 1, name: "CARL-PC" }).waitFor();
    t.equal(
      await page.evaluate("document.activeElement.textContent"),
      "CARL-PC",
      "the new page's heading has the focus",
    );
    await page.goBack();
    await page.getByRole("heading", { level: 1, name: "Fleet" }).waitFor();
    // The heading comes before the list's fetch answers: wait for the tiles, then count them.
    await page.locator("li.tile").first().waitFor();
    t.equal(await page.locator("li.tile").count(), 2, "a viewer sees the whole fleet");
    t.equal(await page.locator("input[type=checkbox]").count(), 0, "no selection for bulk actions");
    t.equal(await page.locator(".bulk, .bulk-hint").count(), 0, "no bulk bar");
    const nav = page.getByRole("navigation", { name: "Main" });
    t.equal(await nav.getByRole("link", { name: "Users" }).count(), 0, "no Users page");
    t.ok(await nav.getByRole("link", { name: "History" }).isVisible(), "history is readable");
    await page.screenshot({ path: join(shots, "viewer-fleet.png"), fullPage: true });

    await page.locator("li.tile", { hasText: "LAB-PC-01" }).getByRole("link").click();
    await page.getByRole("heading", { level: 1, name: "LAB-PC-01" }).waitFor();
    await page.getByRole("heading", { name: "Boot timeline" }).waitFor();
    await page.getByText("No boots recorded yet.").waitFor();
    t.equal(await page.locator("main button").count(), 0, "no button on the machine page");
    t.equal(await page.locator("form").count(), 0, "no boot settings form");
    await page.screenshot({ path: join(shots, "viewer-machine.png"), fullPage: true });

    for (const hash of ["#/jobs", "#/images", "#/storage", "#/alerts"]) {
      await page.evaluate(`location.hash = ${JSON.stringify(hash)}`);
      await page.locator("p.muted", { hasText: "Loading" }).waitFor({ state: "detached" });
      t.equal(await page.locator("main button").count(), 0, `${hash}: no button`);
    }
    t.same(w.cspViolations, [], "no CSP violation");

    // Forced: the API refuses what the page does not offer.
    const token = await d.login("vera", pw);
    t.equal(await d.status("POST", `/machines/${lab.id}/power/on`, undefined, token), 403);
    t.equal(await d.status("PUT", `/machines/${lab.id}`, { room: "x" }, token), 403);
    t.equal(await d.status("POST", "/storage/cleanup", { dry_run: true }, token), 403);
  });

  await t.test("client", async (t) => {
    const { w, page } = await openPage(t);
    await loginThroughForm(page, d.base, "carl", pw);
    await page.locator("li.tile", { hasText: "CARL-PC" }).waitFor();
    t.equal(await page.locator("li.tile").count(), 1, "a client sees only its machine");
    const nav = page.getByRole("navigation", { name: "Main" });
    t.same(await nav.getByRole("link").allTextContents(), ["Fleet"], "and only the fleet page");
    await page.locator("li.tile", { hasText: "CARL-PC" }).getByRole("link").click();
    await page.getByRole("heading", { level: 1, name: "CARL-PC" }).waitFor();
    t.ok(
      await page.getByRole("button", { name: "Power on" }).isVisible(),
      "a client may power its own machine",
    );
    t.equal(await page.locator("form").count(), 0, "but not change its settings");
    await page.screenshot({ path: join(shots, "client-machine.png"), fullPage: true });
    await page.evaluate(`location.hash = "#/machines/${lab.id}"`);
    await page.getByText("No such machine (or not yours).").waitFor();
    t.pass("another machine's page says it is not there");
    t.same(w.cspViolations, [], "no CSP violation");

    const token = await d.login("carl", pw);
    t.equal(await d.status("GET", `/machines/${lab.id}`, undefined, token), 404);
    t.equal(await d.status("POST", `/machines/${lab.id}/power/on`, undefined, token), 404);
    t.equal(await d.status("PUT", `/machines/${own.id}`, { room: "x" }, token), 403);
  });
});
