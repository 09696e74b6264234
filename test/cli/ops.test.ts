import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import t from "tap";
import { callApi } from "../../src/cli/client.js";
import { REPO, startDaemon, tempDir } from "../helpers/daemon.js";
import { runCli } from "./run-cli.js";

const run = promisify(execFile);

/**
 * `bootfleet` against a real built daemon over its local socket (run `npm run build`
 * first): the socket is the admin's credential, TCP without a token is still 401.
 */
t.test("bootfleet over the daemon's local socket", async (t) => {
  const dir = tempDir(t, `bf-cli-ops-${process.pid}-`);
  const sock = join(dir, "api.sock");
  const daemon = await startDaemon(t, {
    env: { BOOTFLEET_DATA_DIR: dir, BOOTFLEET_TFTP_ENABLED: "false", BOOTFLEET_HTTP_SOCKET: sock },
  });
  const d = { sock };
  const hasGroup = await run("getent", ["group", "bootfleet"]).then(
    () => true,
    () => false,
  );
  const mode = statSync(sock).mode & 0o777;
  t.equal(mode, hasGroup ? 0o660 : 0o600, "socket mode: 0660 with a bootfleet group, else 0600");
  const S = ["--socket", d.sock];

  // The same request: over the socket it is the admin, over TCP without a token 401.
  const created = await callApi(d.sock, "POST", "/api/machines", {
    name: "pc-01",
    mac_address: "52:54:00:aa:bb:01",
  });
  t.equal(created.status, 201, `create over the socket: ${JSON.stringify(created.body)}`);
  const machineId = (created.body as { id: number }).id;
  const tcp = await fetch(`http://127.0.0.1:${daemon.port}/api/machines`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "pc-02", mac_address: "52:54:00:aa:bb:02" }),
  });
  t.equal(tcp.status, 401, "the same request over TCP without a token");
  t.equal((await fetch(`http://127.0.0.1:${daemon.port}/api/machines`)).status, 401);

  const list = await runCli(["machines", "list", "--json", ...S]);
  t.equal(list.code, 0, list.stderr);
  const rows = JSON.parse(list.stdout) as { id: number; name: string }[];
  t.same(
    rows.map((r) => r.name),
    ["pc-01"],
  );
  const table = await runCli(["machines", "list", ...S]);
  t.match(table.stdout, /^ID\s+NAME\s+MAC/m);
  t.match(table.stdout, /pc-01\s+52:54:00:aa:bb:01/);

  const show = await runCli(["machines", "show", String(machineId), "--json", ...S]);
  t.equal(show.code, 0);
  t.equal((JSON.parse(show.stdout) as { name: string }).name, "pc-01");
  const none = await runCli(["machines", "show", "99999", ...S]);
  t.equal(none.code, 1, "a missing machine is a failure");
  t.match(none.stderr, /HTTP 404/);

  const imgs = await runCli(["images", "list", "--json", ...S]);
  t.equal(imgs.code, 0, imgs.stderr);
  t.same(JSON.parse(imgs.stdout), []);

  // Alerts and locations belong to the fleet API: either they answer or the CLI says
  // plainly that this daemon has none.
  const alertsRoute = (await callApi(d.sock, "GET", "/api/alerts")).status !== 404;
  const alerts = await runCli(["alerts", ...S]);
  if (alertsRoute) t.equal(alerts.code, 0, alerts.stderr);
  else {
    t.equal(alerts.code, 1);
    t.match(alerts.stderr, /no alerts API/);
  }
  const locRoute = (await callApi(d.sock, "GET", "/api/locations")).status !== 404;
  const room = await runCli(["power", "on", "--location", "room-a", ...S]);
  t.equal(room.code, 1, "no location room-a either way");
  t.match(room.stderr, locRoute ? /no location named "room-a"/ : /no locations API/);

  // Wake-on-LAN for a machine without a BMC: sent (or refused with the daemon's reason).
  const pw = await runCli(["power", "on", String(machineId), ...S]);
  if (pw.code === 0) t.match(pw.stdout, `machine ${machineId}: power on sent`);
  else t.match(pw.stderr, /HTTP \d{3}/);
  const pwNone = await runCli(["power", "off", "99999", ...S]);
  t.equal(pwNone.code, 1, "power for a missing machine fails");
  t.match(pwNone.stderr, /HTTP 404/);

  const cleanup = await callApi(d.sock, "POST", "/api/storage/cleanup");
  t.equal(cleanup.status, 202);
  const jobId = (cleanup.body as { job_id: number }).job_id;
  const watch = await runCli(["jobs", "watch", String(jobId), ...S]);
  t.equal(watch.code, 0, watch.stderr);
  t.match(watch.stdout, new RegExp(`^job ${jobId} storage_cleanup succeeded 100%$`, "m"));
  t.notMatch(watch.stdout, /\r/, "plain lines when stdout is not a terminal");
  const noJob = await runCli(["jobs", "watch", "424242", ...S]);
  t.equal(noJob.code, 1);

  const st = await runCli(["status", "--json", ...S]);
  const health = JSON.parse(st.stdout) as { status: string };
  t.equal(st.code, health.status === "healthy" ? 0 : 1, "status exit code follows health");

  t.equal((await runCli(["machines", "frob", ...S])).code, 2, "usage error");
  t.equal((await runCli(["machines", "show", "x", ...S])).code, 2, "a bad id is a usage error");
  t.equal((await runCli(["alerts", "--bogus", ...S])).code, 2, "unknown option");
  const gone = await runCli(["status", "--socket", join(dir, "nothing.sock")]);
  t.equal(gone.code, 3, "daemon not reachable");
  t.match(gone.stderr, /cannot reach bootfleetd .* no socket there/);

  if (process.getuid?.() === 0) {
    // Another user cannot open it (mode 0600/0660 and a private directory): exit 3.
    const nobody = await run("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      process.execPath,
      join(REPO, "bin/bootfleet.js"),
      "status",
      "--socket",
      d.sock,
    ]).then(
      () => 0,
      (e: { code: number; stderr: string }) => {
        t.match(e.stderr, /permission denied/);
        return e.code;
      },
    );
    t.equal(nobody, 3, "another user is refused by the socket's permissions");
  }
});
