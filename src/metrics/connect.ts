import type { EventBus } from "../events/bus.js";
import type { Store } from "../store/index.js";
import type { BootfleetMetrics } from "./bootfleet.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

/**
 * Feeds the metrics that come from other services: finished jobs (from the bus's
 * job_progress events), events lost to slow subscribers, and the sessions in progress
 * (read from the store at scrape time). Returns the function that disconnects the bus.
 */
export function connectMetrics(opts: {
  metrics: BootfleetMetrics;
  bus: EventBus;
  store: Store;
}): () => void {
  const { metrics, bus, store } = opts;
  const off = bus.on((e) => {
    if (e.type === "job_progress" && FINAL.has(e.payload.status)) {
      metrics.jobFinished(e.payload.type, e.payload.status as "succeeded" | "failed" | "cancelled");
    }
  });
  metrics.onCollect((m) => m.eventsDropped(bus.stats().dropped));
  metrics.registry.onCollect(() => metrics.activeSessions(store.sessions.countInProgress()));
  metrics.registry.onCollect(() => {
    const b = store.targets.versionsBehindSummary();
    metrics.imageVersions({
      overlaysBehind: b.behind,
      versionsBehindMax: b.max,
      updatesOpen: store.imageUpdates.countOpen(),
    });
  });
  return off;
}
