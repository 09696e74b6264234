import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import t, { type Test } from "tap";
import { REPO, type RunningDaemon, startDaemon, tempDir } from "../helpers/daemon.js";

/** Debian's chromium package: Playwright's own browser download cannot work offline. */
export const CHROMIUM = "/usr/bin/chromium";

type Teardown = { teardown(fn: () => void | Promise<void>): void };

/** Why these tests cannot run here, or undefined. In CI a missing browser is a failure. */
export function browserSkipReason(): string | undefined {
  if (!existsSync(CHROMIUM) && process.env.CI !== "true") {
    return `${CHROMIUM} is missing (apt-get install chromium)`;
  }
  if (!existsSync(join(REPO, "dist/web/index.html")) && process.env.CI !== "true") {
    return "dist/web is not built (npm run build)";
  }
  return undefined;
}

/** Why a browser test that needs root cannot run here, or undefined (in CI, it must run). */
export function rootSkipReason(why: string): string | undefined {
  return process.getuid?.() !== 0 && process.env.CI !== "true" ? `needs root: ${why}` : undefined;
}

/**
 * A browser test against its own dashboard (startDashboard), skipped where there is no
 * browser or no built dashboard.
 */
export function dashboardTest(name: string, fn: (t: Test, d: Dashboard) => Promise<void>) {
  return t.test(name, { skip: browserSkipReason() ?? false }, async (t) =>
    fn(t, await startDashboard(t)),
  );
}

/**
 * Headless Chromium with nothing that talks to the network on its own (no component
 * updates, sync or QUIC probes), closed in teardown. Playwright gives every launch a
 * fresh temporary profile (user-data-dir) and removes it.
 */
export async function launchBrowser(t: Teardown, executablePath = CHROMIUM): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 60_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  t.teardown(() => browser.close());
  return browser;
}

/**
 * Headless Chromium inside a network namespace (Playwright talks to it over inherited
 * pipes), so its pages reach the LAN as a PC's admin would; closed in teardown.
 */
export async function launchBrowserIn(t: Teardown, ns: string): Promise<Browser> {
  const bin = tempDir(t, `bf-web-bin-${process.pid}-`);
  const inNs = join(bin, "chromium");
  writeFileSync(inNs, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  return launchBrowser(t, inNs);
}

/**
 * The admin's page on a LAN (Chromium in the namespace `ns`), logged in through the form at
 * `base`; its context is closed in teardown.
 */
export async function adminPageIn(
  t: Teardown,
  ns: string,
  base: string,
  password: string,
): Promise<WatchedPage> {
  const browser = await launchBrowserIn(t, ns);
  const context = await browser.newContext({ viewport: { width: 1280, height: 700 } });
  t.teardown(() => context.close());
  const w = await watchedPage(context);
  // A bound, not an expectation: the daemon and QEMU share two busy cores.
  w.page.setDefaultTimeout(30_000);
  await loginThroughForm(w.page, base, "admin", password);
  return w;
}

export interface Dashboard {
  daemon: RunningDaemon;
  base: string;
  dataDir: string;
  adminPassword: string;
  /** The admin's access token (one login, from this process). */
  adminToken: string;
  api<T = unknown>(method: string, path: string, body?: unknown, token?: string): Promise<T>;
  /** The status of a call, for the calls expected to be refused. */
  status(method: string, path: string, body?: unknown, token?: string): Promise<number>;
  login(username: string, password: string): Promise<string>;
}

/**
 * A built daemon on a free port with its dashboard, and an API client for the test's own
 * setup. Mind the contract's auth rate limit (5 logins or refreshes per 5 minutes per
 * address): a test file logs in at most that often.
 */
export async function startDashboard(t: Teardown & { name?: string }): Promise<Dashboard> {
  const dataDir = tempDir(t, `bf-web-${process.pid}-`);
  const daemon = await startDaemon(t, {
    env: { BOOTFLEET_DATA_DIR: dataDir, BOOTFLEET_TFTP_ENABLED: "false" },
    timeoutMs: 60_000,
  });
  const base = `http://127.0.0.1:${daemon.port}`;
  const adminPassword = readFileSync(join(dataDir, "initial-admin-password"), "utf8").trim();
  const call = async (method: string, path: string, body?: unknown, token?: string) => {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    return fetch(`${base}/api${path}`, {
      method,
      headers,
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  };
  const login = async (username: string, password: string) => {
    const res = await call("POST", "/auth/login", { username, password });
    if (res.status !== 200) throw new Error(`login ${username}: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { access_token: string }).access_token;
  };
  const adminToken = await login("admin", adminPassword);
  return {
    daemon,
    base,
    dataDir,
    adminPassword,
    adminToken,
    login,
    api: async <T>(method: string, path: string, body?: unknown, token = adminToken) => {
      const res = await call(method, path, body, token);
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return (text ? JSON.parse(text) : undefined) as T;
    },
    status: async (method, path, body, token = adminToken) =>
      (await call(method, path, body, token)).status,
  };
}

export interface WatchedPage {
  page: Page;
  /** Console messages and page errors that name the Content-Security-Policy. */
  cspViolations: string[];
  /** Every console error and uncaught exception, for failure messages. */
  errors: string[];
}

/** A page that records CSP violations (console and securitypolicyviolation events). */
export async function watchedPage(context: BrowserContext): Promise<WatchedPage> {
  const page = await context.newPage();
  const cspViolations: string[] = [];
  const errors: string[] = [];
  page.on("console", (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to (load|execute|apply|connect|evaluate)/i.test(text)) {
      cspViolations.push(text);
    }
    if (m.type() === "error") errors.push(text);
  });
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.exposeFunction("__bfCsp", (text: string) => cspViolations.push(text));
  await page.addInitScript(`document.addEventListener("securitypolicyviolation", (e) =>
    window.__bfCsp(e.violatedDirective + " blocked " + e.blockedURI));`);
  return { page, cspViolations, errors };
}

/** Logs in through the form and waits for the fleet page. */
export async function loginThroughForm(page: Page, base: string, user: string, password: string) {
  await page.goto(`${base}/`);
  await page.getByLabel("User name or email").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { level: 1, name: "Fleet" }).waitFor({ timeout: 15_000 });
}

/** A temporary folder for screenshots, kept when BOOTFLEET_SCREENSHOTS names one. */
export function screenshotDir(t: Teardown): string {
  const keep = process.env.BOOTFLEET_SCREENSHOTS;
  if (keep) return keep;
  const dir = mkdtempSync(join(tmpdir(), `bf-web-shots-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * axe-core in the page, run for serious and critical WCAG A/AA violations. The page's CSP
 * forbids injected scripts, so this runs in a context made with bypassCSP (only for this).
 */
export async function axeViolations(page: Page): Promise<string[]> {
  await page.addScriptTag({ path: join(REPO, "node_modules/axe-core/axe.min.js") });
  const options = {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
    resultTypes: ["violations"],
  };
  const result = (await page.evaluate(`axe.run(${JSON.stringify(options)})`)) as {
    violations: { id: string; impact: string | null; help: string; nodes: { target: unknown }[] }[];
  };
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map(
      (v) =>
        `${v.impact} ${v.id}: ${v.help} (${v.nodes
          .slice(0, 3)
          .map((n) => JSON.stringify(n.target))
          .join(", ")})`,
    );
}
