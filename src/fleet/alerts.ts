import type { EventBus } from "../events/bus.js";
import type { Alert, RaiseAlert } from "../store/alerts.js";
import type { Store } from "../store/index.js";

/**
 * Alerts as the fleet raises them: stored once per cause per machine (a repeat refreshes
 * the active one), and announced as a `system_alert` event only when new, so a stall
 * seen on every tick is one alert and one event.
 */
export class Alerts {
  constructor(private readonly d: { store: Store; bus?: EventBus | undefined }) {}

  raise(a: RaiseAlert): Alert {
    const { alert, created } = this.d.store.alerts.raise(a);
    if (created) {
      this.d.bus?.publish("system_alert", {
        level: a.severity,
        source: a.cause,
        message: a.message,
        alert_id: alert.id,
        machine_id: a.machine_id,
      });
    }
    return alert;
  }

  /** The cause went away: the active alert (if any) is resolved, its history kept. */
  resolve(cause: string, machineId: number | null): void {
    this.d.store.alerts.resolve(cause, machineId);
  }

  /** Raises or resolves, by whether the condition holds now. */
  set(holds: boolean, a: RaiseAlert): void {
    if (holds) this.raise(a);
    else this.resolve(a.cause, a.machine_id);
  }
}
