import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { BootfleetMetrics } from "../../src/metrics/bootfleet.js";

/** contrib/grafana/bootfleet.json: valid JSON whose queries name only metrics that exist. */
t.test("the Grafana dashboard queries only metrics the daemon exposes", async (t) => {
  const file = join(import.meta.dirname, "../../contrib/grafana/bootfleet.json");
  const dash = JSON.parse(readFileSync(file, "utf8")) as {
    panels: { title: string; targets: { expr: string }[] }[];
  };
  const m = new BootfleetMetrics({ processMetrics: true });
  // Every registered family has a TYPE line, even before its first sample.
  const exposed = new Set<string>();
  for (const [, name, type] of (await m.expose()).matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    exposed.add(name!);
    if (type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) exposed.add(name + s);
  }
  t.ok(dash.panels.length >= 10);
  const fns = new Set(["sum", "by", "rate", "increase", "histogram_quantile", "le"]);
  for (const p of dash.panels) {
    for (const target of p.targets) {
      const names = (target.expr.match(/\b[a-z_][a-z0-9_]*\b/g) ?? []).filter(
        (w) => w.includes("_") && !fns.has(w),
      );
      // Label names in by (...) are not metrics: keep words that are series names.
      const metrics = names.filter((n) => /^(bootfleet|process|nodejs)_/.test(n));
      t.ok(metrics.length > 0, `${p.title}: names a metric`);
      for (const n of metrics) t.ok(exposed.has(n), `${p.title}: ${n} is exposed`);
    }
  }
});
