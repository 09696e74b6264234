import * as prom from "prom-client";

/**
 * The product's metric registry on prom-client (the ecosystem's library: exposition
 * format, escaping, and process/heap/event-loop metrics from collectDefaultMetrics).
 *
 * This file is the thin wrapper that keeps the bounded-label rule, which prom-client
 * does not have: every label declares the values it may take, or a cap on how many
 * distinct values it may see; a value outside them is recorded as "other". Nothing
 * per-machine (a MAC, an IQN, an IP) can become a time series, and a label whose NAME says
 * it would hold one is refused when the metric is registered.
 */

export const CONTENT_TYPE = prom.Registry.PROMETHEUS_CONTENT_TYPE;

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const OTHER = "other";
// Label names that can only hold a per-machine value: refused at registration.
const PER_MACHINE_NAMES =
  /^(mac|hwaddr|iqn|initiator|ip|ipv4|ipv6|addr|address|host|hostname|uuid|serial|machine|machine_id)$/i;
// Values that identify one machine or disk: refused even where a label has only a cap.
const PER_MACHINE = [
  /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i, // MAC
  /^iqn\./i, // iSCSI qualified name
  /^eui\./i,
  /^\d{1,3}(\.\d{1,3}){3}$/, // IPv4
  /^[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}$/i, // IPv6
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, // UUID
];

export type LabelSpec = readonly string[] | { maxValues: number };

interface MetricOptions<L extends string> {
  name: string;
  help: string;
  /** Each label with its allowed values, or a cap on distinct values. */
  labels?: Record<L, LabelSpec>;
}

type Labels<L extends string> = Partial<Record<L, string | number>>;

/** Checks names and label specs, and maps raw label values onto bounded ones. */
class LabelBounds<L extends string> {
  readonly labelNames: readonly L[];
  readonly #specs: Record<string, LabelSpec>;
  readonly #seen = new Map<string, Set<string>>();

  constructor(opts: MetricOptions<L>) {
    if (!NAME.test(opts.name)) throw new Error(`invalid metric name ${opts.name}`);
    this.#specs = (opts.labels ?? {}) as Record<string, LabelSpec>;
    this.labelNames = Object.keys(this.#specs) as L[];
    for (const l of this.labelNames) {
      if (!LABEL.test(l) || l.startsWith("__") || l === "le") {
        throw new Error(`invalid label name ${l} on ${opts.name}`);
      }
      if (PER_MACHINE_NAMES.test(l)) {
        throw new Error(`label ${l} on ${opts.name} would hold a per-machine value`);
      }
      const spec = this.#specs[l]!;
      const bounded = Array.isArray(spec)
        ? spec.length > 0
        : Number.isInteger((spec as { maxValues: number }).maxValues) &&
          (spec as { maxValues: number }).maxValues > 0;
      if (!bounded) {
        throw new Error(`label ${l} on ${opts.name} needs its values or a positive maxValues`);
      }
      if (Array.isArray(spec) && spec.some((v) => PER_MACHINE.some((re) => re.test(v)))) {
        throw new Error(`label ${l} on ${opts.name} lists a per-machine value`);
      }
    }
  }

  /** Label values in declaration order (the order they are written out), each bounded. */
  bound(labels: Labels<L> | undefined): Record<string, string> {
    const out: Record<string, string> = {};
    for (const l of this.labelNames) out[l] = this.#bound(l, labels?.[l]);
    return out;
  }

  #bound(label: string, raw: string | number | undefined): string {
    const v = raw === undefined ? "" : String(raw);
    const spec = this.#specs[label]!;
    if (Array.isArray(spec)) return spec.includes(v) ? v : OTHER;
    let seen = this.#seen.get(label);
    if (!seen) {
      seen = new Set();
      this.#seen.set(label, seen);
    }
    // A value seen before passed the per-machine patterns then: not tested again on every
    // record (six regular expressions per label per API request).
    if (seen.has(v)) return v;
    if (PER_MACHINE.some((re) => re.test(v))) return OTHER;
    if (seen.size >= (spec as { maxValues: number }).maxValues) return OTHER;
    seen.add(v);
    return v;
  }
}

export class Counter<L extends string = never> {
  readonly name: string;
  readonly #bounds: LabelBounds<L>;
  readonly #c: prom.Counter<string>;

  constructor(opts: MetricOptions<L>, registry: prom.Registry) {
    this.#bounds = new LabelBounds(opts);
    if (!opts.name.endsWith("_total")) throw new Error(`counter ${opts.name} must end in _total`);
    this.name = opts.name;
    this.#c = new prom.Counter({
      name: opts.name,
      help: opts.help,
      labelNames: [...this.#bounds.labelNames],
      registers: [registry],
    });
  }

  inc(labels?: Labels<L>, by = 1): void {
    if (!(by >= 0)) throw new Error(`counter ${this.name} can only go up (got ${by})`);
    this.#c.inc(this.#bounds.bound(labels), by);
  }
}

export class Gauge<L extends string = never> {
  readonly name: string;
  readonly #bounds: LabelBounds<L>;
  readonly #g: prom.Gauge<string>;

  constructor(opts: MetricOptions<L>, registry: prom.Registry) {
    this.#bounds = new LabelBounds(opts);
    this.name = opts.name;
    this.#g = new prom.Gauge({
      name: opts.name,
      help: opts.help,
      labelNames: [...this.#bounds.labelNames],
      registers: [registry],
    });
  }

  set(value: number, labels?: Labels<L>): void {
    this.#g.set(this.#bounds.bound(labels), value);
  }
  inc(labels?: Labels<L>, by = 1): void {
    this.#g.inc(this.#bounds.bound(labels), by);
  }
  dec(labels?: Labels<L>, by = 1): void {
    this.#g.dec(this.#bounds.bound(labels), by);
  }
}

export class Histogram<L extends string = never> {
  readonly name: string;
  readonly #bounds: LabelBounds<L>;
  readonly #h: prom.Histogram<string>;

  constructor(opts: MetricOptions<L> & { buckets: readonly number[] }, registry: prom.Registry) {
    this.#bounds = new LabelBounds(opts);
    this.name = opts.name;
    const b = [...opts.buckets].filter((x) => x !== Number.POSITIVE_INFINITY);
    for (let i = 1; i < b.length; i++) {
      if (!(b[i]! > b[i - 1]!)) throw new Error(`buckets of ${opts.name} must increase`);
    }
    this.#h = new prom.Histogram({
      name: opts.name,
      help: opts.help,
      labelNames: [...this.#bounds.labelNames],
      buckets: b,
      registers: [registry],
    });
  }

  observe(value: number, labels?: Labels<L>): void {
    if (Number.isNaN(value)) return;
    this.#h.observe(this.#bounds.bound(labels), value);
  }
}

export class Registry {
  readonly #prom = new prom.Registry();
  readonly #collectors: Array<() => void> = [];

  counter<L extends string = never>(opts: MetricOptions<L>): Counter<L> {
    this.#unique(opts.name);
    return new Counter<L>(opts, this.#prom);
  }
  gauge<L extends string = never>(opts: MetricOptions<L>): Gauge<L> {
    this.#unique(opts.name);
    return new Gauge<L>(opts, this.#prom);
  }
  histogram<L extends string = never>(
    opts: MetricOptions<L> & { buckets: readonly number[] },
  ): Histogram<L> {
    this.#unique(opts.name);
    return new Histogram<L>(opts, this.#prom);
  }

  #unique(name: string): void {
    if (this.#prom.getSingleMetric(name)) throw new Error(`metric ${name} registered twice`);
  }

  /**
   * prom-client's process, heap, GC and event-loop metrics (process_*, nodejs_*). Their
   * labels are prom-client's own small sets (heap space, GC kind, version).
   */
  collectProcessMetrics(): void {
    prom.collectDefaultMetrics({ register: this.#prom });
  }

  /** A function run before each exposition, to read gauges from their source. */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  async expose(): Promise<string> {
    for (const c of this.#collectors) {
      try {
        c();
      } catch {
        // A failing collector leaves its gauges at their last value rather than break /metrics.
      }
    }
    return this.#prom.metrics();
  }
}
