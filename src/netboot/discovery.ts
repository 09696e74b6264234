import type { Logger } from "pino";
import type { EventBus } from "../events/bus.js";
import type { Store } from "../store/index.js";
import type { MachineBootView } from "../store/machines.js";
import type { ClientInfo } from "./dhcp/client.js";

/** New machines registered at most this often, and this many waiting at most. */
const DISCOVERIES_PER_MINUTE = 60;
const MAX_DISCOVERED = 5000;
/** A PC sends several requests per boot: last_seen to the second is not worth a write each. */
const LAST_SEEN_RESOLUTION_MS = 10_000;

export interface DiscoveryDeps {
  store: Store;
  log: Logger;
  /** machine_discovered events for the API's event streams. */
  bus?: EventBus;
  limiter?: DiscoveryLimiter;
  clock?: () => number;
}

/**
 * Discovery: every PXE client the proxy-DHCP hears is written down (an unknown MAC
 * becomes a `discovered` machine and a machine_discovered event), within the limiter's
 * bounds; a known one has its last_seen refreshed.
 */
export class Discovery {
  private readonly limiter: DiscoveryLimiter;
  private readonly clock: () => number;

  constructor(private readonly deps: DiscoveryDeps) {
    this.clock = deps.clock ?? Date.now;
    this.limiter = deps.limiter ?? new DiscoveryLimiter(DISCOVERIES_PER_MINUTE, MAX_DISCOVERED);
  }

  /**
   * The client's machine (the fields the DHCP side decides on), recorded as seen now;
   * undefined for an unknown MAC refused by the limiter.
   */
  seen(client: ClientInfo & { mac: string }): MachineBootView | undefined {
    const { store, log } = this.deps;
    const known = store.machines.bootViewByMac(client.mac);
    if (!known && !this.limiter.allow(() => store.machines.countByStatus("discovered"))) {
      return undefined;
    }
    if (known?.last_seen && this.clock() - Date.parse(known.last_seen) < LAST_SEEN_RESOLUTION_MS) {
      return known;
    }
    const seen = {
      mac_address: client.mac,
      client_arch: client.arch ?? null,
      client_uuid: client.uuid ?? null,
      vendor_class: client.vendorClass ?? null,
    };
    if (known) {
      // A known MAC: its last_seen is queued, written behind the reply with the offers
      // (recordSeen's transaction is for creating one).
      return { ...known, last_seen: store.machines.touchSeen(known.id, seen) };
    }
    const { machine, created } = store.machines.recordSeen(seen);
    if (created) {
      log.info(
        { mac: client.mac, arch: client.archKind, name: machine.name },
        "machine discovered",
      );
      this.deps.bus?.publish("machine_discovered", {
        machine_id: machine.id,
        mac_address: machine.mac_address,
        client_arch: machine.client_arch,
      });
    }
    return machine;
  }
}

/**
 * How many unknown MACs the proxy-DHCP may register, so a flood of random MACs can fill
 * neither the database nor the log: at most `perMinute` new machines a minute, and at most
 * `maxDiscovered` machines waiting in `discovered` at once. A refused client still boots
 * into the discovery script; it is just not written down until there is room.
 */
export class DiscoveryLimiter {
  private windowStart = 0;
  private inWindow = 0;

  constructor(
    private readonly perMinute: number,
    private readonly maxDiscovered: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Whether one more machine may be registered now, given how many are waiting. The count
   * is asked for only when the minute still has room: a flood of unknown MACs past the
   * limit costs no query each.
   */
  allow(discoveredNow: () => number): boolean {
    const now = this.clock();
    if (now - this.windowStart >= 60_000) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow >= this.perMinute) return false;
    if (discoveredNow() >= this.maxDiscovered) return false;
    this.inWindow++;
    return true;
  }
}
