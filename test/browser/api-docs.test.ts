import { join } from "node:path";
import { dashboardTest, launchBrowser, screenshotDir, watchedPage } from "./helpers.js";

/**
 * /api/docs in a real browser: Swagger UI from the package (no CDN), under the page's
 * strict CSP with no violation, listing the operations of /api/openapi.json; "Try it out"
 * calls a public route, then, once authorized with a bearer token, an authenticated one.
 */
dashboardTest("api docs: Swagger UI, offline and CSP-clean, tries operations out", async (t, d) => {
  const res = await fetch(`${d.base}/api/docs`);
  t.equal(res.status, 200);
  const csp = res.headers.get("content-security-policy") ?? "";
  t.match(csp, /script-src 'self'(;|$)/, "scripts from this origin only");
  t.match(csp, /style-src 'self'(;|$)/, "styles from this origin only");
  t.notMatch(csp, /unsafe-inline|unsafe-eval|https?:/, "no inline, no eval, no other host");

  const browser = await launchBrowser(t);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const w = await watchedPage(context);
  const page = w.page;
  // Bounds, not expectations: parsing the 1.7 MB bundle on a busy two-core machine is slow.
  page.setDefaultTimeout(60_000);
  const outside: string[] = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(d.base) && !r.url().startsWith("data:")) outside.push(r.url());
  });

  await page.goto(`${d.base}/api/docs`);
  const op = (method: string, path: string) =>
    page.locator(`.opblock-${method}`, {
      has: page.locator(`.opblock-summary-path[data-path="${path}"]`),
    });
  const health = op("get", "/api/health");
  await health.waitFor({ timeout: 120_000 });
  t.ok(await op("post", "/api/machines").count(), "lists the operations of the document");

  // Opens an operation, tries it out and says the status of its answer.
  const tryOut = async (block: ReturnType<typeof op>) => {
    await block.locator(".opblock-summary").click();
    await block.getByRole("button", { name: "Try it out" }).click();
    await block.getByRole("button", { name: "Execute" }).click();
    const status = block.locator(".live-responses-table tr.response .response-col_status");
    await status.waitFor();
    return { status, text: (await status.textContent())?.trim() };
  };

  // A public route: no token needed.
  t.equal((await tryOut(health)).text, "200", "GET /api/health from the UI: 200");

  // An authenticated route: refused without a token, 200 once authorized.
  const machines = op("get", "/api/machines");
  const { status: machinesStatus, text } = await tryOut(machines);
  t.equal(text, "401", "without a token: 401");

  await page.locator(".auth-wrapper .authorize").click();
  const dialog = page.locator(".dialog-ux .modal-ux");
  await dialog.locator("input").first().fill(d.adminToken);
  await dialog.getByRole("button", { name: "Apply credentials" }).click();
  await dialog.getByRole("button", { name: "Close" }).click();
  await machines.getByRole("button", { name: "Execute" }).click();
  await machinesStatus.filter({ hasText: /^\s*200\s*$/ }).waitFor();
  t.pass("GET /api/machines with the bearer token from Authorize: 200");
  t.match(
    await machines.locator(".curl").textContent(),
    /Authorization: Bearer ey/,
    "the request carried the token",
  );

  await page.screenshot({ path: join(screenshotDir(t), "api-docs.png"), fullPage: false });
  t.same(w.cspViolations, [], "no CSP violation");
  t.same(outside, [], "no request to another host");
  if (w.errors.length) t.comment(`console errors: ${w.errors.join(" | ")}`);
  await context.close();
});
