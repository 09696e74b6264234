import { execFileSync } from "node:child_process";
import t from "tap";
import { BootfleetMetrics } from "../../src/metrics/bootfleet.js";
import { Registry } from "../../src/metrics/registry.js";

/**
 * Parses an exposition with the reference Python client's parser (Debian package
 * python3-prometheus-client): what it reads back is what Prometheus would scrape.
 */
function parseWithPrometheusClient(text: string) {
  const script = `
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": fam.name, "type": fam.type, "help": fam.documentation,
                "samples": [[s.name, s.labels, None if s.value != s.value else s.value] for s in fam.samples]})
print(json.dumps(out))
`;
  const res = execFileSync("/usr/bin/python3", ["-c", script], { input: text });
  return JSON.parse(res.toString()) as {
    name: string;
    type: string;
    help: string;
    samples: [string, Record<string, string>, number][];
  }[];
}

const hasParser = (() => {
  try {
    execFileSync("/usr/bin/python3", ["-c", "import prometheus_client.parser"], {
      stdio: "ignore",
    });
    return true;
  } catch {
    return false;
  }
})();
const needsParser = hasParser ? false : "needs the Debian package python3-prometheus-client";

t.test(
  "escaping of HELP and label values follows the text format and reads back exactly",
  { skip: needsParser },
  async (t) => {
    const r = new Registry();
    const c = r.counter<"route">({
      name: "demo_requests_total",
      help: 'Back\\slash, "quotes" and a\nnewline.',
      labels: { route: { maxValues: 10 } },
    });
    const nasty = 'a\\b"c\nd';
    c.inc({ route: nasty }, 3);
    const text = await r.expose();
    t.match(text, /^# HELP demo_requests_total Back\\\\slash, "quotes" and a\\nnewline\.$/m);
    t.match(text, /^# TYPE demo_requests_total counter$/m);
    t.ok(text.includes('demo_requests_total{route="a\\\\b\\"c\\nd"} 3\n'));
    const [fam] = parseWithPrometheusClient(text);
    t.equal(fam?.name, "demo_requests", "the parser strips _total from a counter family");
    t.equal(fam?.type, "counter");
    t.equal(fam?.help, 'Back\\slash, "quotes" and a\nnewline.');
    t.same(fam?.samples[0], ["demo_requests_total", { route: nasty }, 3]);
  },
);

t.test(
  "histograms: cumulative buckets, +Inf equal to _count, _sum",
  { skip: needsParser },
  async (t) => {
    const r = new Registry();
    const h = r.histogram<"phase">({
      name: "demo_duration_seconds",
      help: "Demo.",
      labels: { phase: ["a", "b"] },
      buckets: [0.5, 1, 5],
    });
    for (const v of [0.1, 0.5, 0.7, 3, 100]) h.observe(v, { phase: "a" });
    const [fam] = parseWithPrometheusClient(await r.expose());
    t.equal(fam?.type, "histogram");
    const byLe = Object.fromEntries(
      fam!.samples.filter((s) => s[0].endsWith("_bucket")).map((s) => [s[1].le, s[2]]),
    );
    // le is inclusive: 0.5 falls in the 0.5 bucket.
    t.same(byLe, { "0.5": 2, "1": 3, "5": 4, "+Inf": 5 });
    const get = (n: string) => fam!.samples.find((s) => s[0] === n)?.[2];
    t.equal(get("demo_duration_seconds_count"), 5);
    t.equal(get("demo_duration_seconds_sum"), 104.3);
  },
);

t.test("names and types are checked: counters end in _total and never go down", async (t) => {
  const r = new Registry();
  t.throws(() => r.counter({ name: "requests", help: "x" }), /_total/);
  t.throws(() => r.counter({ name: "bad-name_total", help: "x" }), /invalid metric name/);
  const c = r.counter({ name: "x_total", help: "x" });
  t.throws(() => c.inc(undefined, -1), /only go up/);
  t.throws(() => r.counter({ name: "x_total", help: "again" }), /twice/);
  t.throws(() => r.histogram({ name: "h_seconds", help: "x", buckets: [1, 1] }), /increase/);
});

t.test("label values stay bounded: unknown values, MACs, IQNs and IPs become other", async (t) => {
  const r = new Registry();
  const c = r.counter<"arch" | "route">({
    name: "b_total",
    help: "x",
    labels: { arch: ["bios", "efi_x64"], route: { maxValues: 3 } },
  });
  c.inc({ arch: "bios", route: "/api/images" });
  c.inc({ arch: "52:54:00:12:34:56", route: "52:54:00:12:34:56" });
  c.inc({ arch: "efi_x64", route: "iqn.2025-01.lan.boot:pc1" });
  c.inc({ arch: "bios", route: "10.0.0.7" });
  for (let i = 0; i < 50; i++) c.inc({ arch: "bios", route: `/api/x${i}` });
  const text = await r.expose();
  t.notMatch(text, /52:54|iqn\.|10\.0\.0\.7/);
  const routes = new Set([...text.matchAll(/route="([^"]*)"/g)].map((m) => m[1]));
  t.ok(routes.size <= 4, `routes seen: ${[...routes].join(" ")}`);
  t.ok(routes.has("other"));
});

t.test(
  "the product's metrics: names, units and series as Prometheus reads them",
  { skip: needsParser },
  async (t) => {
    const m = new BootfleetMetrics();
    m.dhcpOffer(0);
    m.dhcpOffer(7);
    m.dhcpOffer(7);
    m.dhcpOffer("ipxe");
    m.dhcpOffer(4242);
    m.tftpTransfer("ok", 70_000);
    m.tftpTransfer("aborted", 0);
    m.tftpBusy();
    m.tftpBusy();
    m.scriptServed("sanboot");
    m.activeSessions(3);
    m.bootPhase("tftp", 1.2);
    m.apiRequest("GET", "/api/images/:id", 200, 0.004);
    m.apiRequest("GET", "/api/images/:id", 404, 0.002);
    m.jobFinished("image_import", "succeeded");
    m.onCollect((g) => g.eventsDropped(5));
    const fams = parseWithPrometheusClient(await m.expose());
    const fam = (n: string) => fams.find((f) => f.name === n);
    const value = (n: string, labels: Record<string, string>) =>
      fams
        .flatMap((f) => f.samples)
        .find((s) => s[0] === n && Object.entries(labels).every(([k, v]) => s[1][k] === v))?.[2];
    t.equal(value("bootfleet_dhcp_offers_total", { arch: "efi_x64" }), 2);
    t.equal(value("bootfleet_dhcp_offers_total", { arch: "bios" }), 1);
    t.equal(value("bootfleet_dhcp_offers_total", { arch: "ipxe" }), 1);
    t.equal(value("bootfleet_dhcp_offers_total", { arch: "other" }), 1);
    t.equal(value("bootfleet_tftp_sent_bytes_total", {}), 70_000);
    t.equal(value("bootfleet_tftp_transfers_total", { result: "aborted" }), 1);
    t.equal(value("bootfleet_tftp_busy_unanswered_total", {}), 2);
    t.equal(value("bootfleet_boot_scripts_served_total", { action: "sanboot" }), 1);
    t.equal(value("bootfleet_active_sessions", {}), 3);
    t.equal(value("bootfleet_boot_phase_duration_seconds_count", { phase: "tftp" }), 1);
    t.equal(value("bootfleet_api_requests_total", { route: "/api/images/:id", status: "404" }), 1);
    t.equal(value("bootfleet_events_dropped", {}), 5);
    t.equal(fam("bootfleet_active_sessions")?.type, "gauge");
    t.equal(fam("bootfleet_boot_phase_duration_seconds")?.type, "histogram");
    for (const f of fams) {
      if (f.type === "counter") t.notOk(f.name.endsWith("_total"), `${f.name}: parser saw _total`);
      t.ok(f.help.length > 0, `${f.name} has HELP`);
    }
  },
);

t.test(
  "a label whose name or listed values are per-machine is refused at registration",
  async (t) => {
    const r = new Registry();
    for (const name of ["mac", "iqn", "ip", "address", "hostname"]) {
      t.throws(
        () => r.counter({ name: `${name}_total`, help: "x", labels: { [name]: { maxValues: 5 } } }),
        /per-machine/,
        name,
      );
    }
    t.throws(
      () =>
        r.counter({ name: "v_total", help: "x", labels: { kind: ["bios", "52:54:00:00:00:01"] } }),
      /per-machine value/,
    );
    t.throws(
      () => r.counter({ name: "w_total", help: "x", labels: { kind: { maxValues: 0 } } }),
      /maxValues/,
    );
  },
);

t.test(
  "prom-client adds process, heap and event-loop metrics, read back by prometheus_client",
  { skip: needsParser },
  async (t) => {
    const fams = parseWithPrometheusClient(
      await new BootfleetMetrics({ processMetrics: true }).expose(),
    );
    const names = new Set(fams.map((f) => f.name));
    for (const n of [
      "process_cpu_user_seconds",
      "process_resident_memory_bytes",
      "nodejs_heap_size_used_bytes",
      "nodejs_eventloop_lag_seconds",
    ]) {
      t.ok(names.has(n), n);
    }
    const bare = parseWithPrometheusClient(await new BootfleetMetrics().expose());
    t.notOk(
      bare.some((f) => f.name.startsWith("nodejs_")),
      "without processMetrics they are left out",
    );
  },
);
