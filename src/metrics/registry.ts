/**
 * A small Prometheus registry and text exposition (format 0.0.4): counters, gauges and
 * histograms with fixed buckets. Label values are bounded by construction: every label
 * declares the values it may take, or a cap on how many distinct values it may see; a
 * value outside them is recorded as "other". Nothing per-machine (a MAC, an IQN, an IP)
 * can become a time series.
 */

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const OTHER = "other";
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

abstract class Metric<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  readonly #specs: Record<string, LabelSpec>;
  readonly #seen = new Map<string, Set<string>>();
  abstract readonly type: "counter" | "gauge" | "histogram";

  constructor(opts: MetricOptions<L>) {
    if (!NAME.test(opts.name)) throw new Error(`invalid metric name ${opts.name}`);
    this.name = opts.name;
    this.help = opts.help;
    this.#specs = (opts.labels ?? {}) as Record<string, LabelSpec>;
    this.labelNames = Object.keys(this.#specs) as L[];
    for (const l of this.labelNames) {
      if (!LABEL.test(l) || l.startsWith("__") || l === "le") {
        throw new Error(`invalid label name ${l} on ${opts.name}`);
      }
    }
  }

  /** The series key: label values in declaration order, each bounded. */
  protected key(labels: Labels<L> | undefined): string {
    return JSON.stringify(this.labelNames.map((l) => this.#bound(l, labels?.[l])));
  }

  #bound(label: string, raw: string | number | undefined): string {
    const v = raw === undefined ? "" : String(raw);
    const spec = this.#specs[label]!;
    if (Array.isArray(spec)) return spec.includes(v) ? v : OTHER;
    if (PER_MACHINE.some((re) => re.test(v))) return OTHER;
    let seen = this.#seen.get(label);
    if (!seen) {
      seen = new Set();
      this.#seen.set(label, seen);
    }
    if (seen.has(v)) return v;
    if (seen.size >= (spec as { maxValues: number }).maxValues) return OTHER;
    seen.add(v);
    return v;
  }

  protected labelText(key: string, extra?: [string, string]): string {
    const values = JSON.parse(key) as string[];
    const pairs = this.labelNames.map((l, i) => `${l}="${escapeLabel(values[i]!)}"`);
    if (extra) pairs.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
    return pairs.length ? `{${pairs.join(",")}}` : "";
  }

  header(): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
  }

  abstract samples(): string;
}

export class Counter<L extends string = never> extends Metric<L> {
  readonly type = "counter";
  readonly #values = new Map<string, number>();

  constructor(opts: MetricOptions<L>) {
    super(opts);
    if (!opts.name.endsWith("_total")) throw new Error(`counter ${opts.name} must end in _total`);
    if (this.labelNames.length === 0) this.#values.set(this.key(undefined), 0);
  }

  inc(labels?: Labels<L>, by = 1): void {
    if (!(by >= 0)) throw new Error(`counter ${this.name} can only go up (got ${by})`);
    const k = this.key(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  get(labels?: Labels<L>): number {
    return this.#values.get(this.key(labels)) ?? 0;
  }

  samples(): string {
    let out = "";
    for (const [k, v] of this.#values) out += `${this.name}${this.labelText(k)} ${fmt(v)}\n`;
    return out;
  }
}

export class Gauge<L extends string = never> extends Metric<L> {
  readonly type = "gauge";
  readonly #values = new Map<string, number>();

  constructor(opts: MetricOptions<L>) {
    super(opts);
    if (this.labelNames.length === 0) this.#values.set(this.key(undefined), 0);
  }

  set(value: number, labels?: Labels<L>): void {
    this.#values.set(this.key(labels), value);
  }
  inc(labels?: Labels<L>, by = 1): void {
    const k = this.key(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  dec(labels?: Labels<L>, by = 1): void {
    this.inc(labels, -by);
  }
  get(labels?: Labels<L>): number {
    return this.#values.get(this.key(labels)) ?? 0;
  }

  samples(): string {
    let out = "";
    for (const [k, v] of this.#values) out += `${this.name}${this.labelText(k)} ${fmt(v)}\n`;
    return out;
  }
}

interface HistogramSeries {
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram<L extends string = never> extends Metric<L> {
  readonly type = "histogram";
  readonly buckets: readonly number[];
  readonly #series = new Map<string, HistogramSeries>();

  constructor(opts: MetricOptions<L> & { buckets: readonly number[] }) {
    super(opts);
    const b = [...opts.buckets].filter((x) => x !== Number.POSITIVE_INFINITY);
    for (let i = 1; i < b.length; i++) {
      if (!(b[i]! > b[i - 1]!)) throw new Error(`buckets of ${opts.name} must increase`);
    }
    this.buckets = b;
    if (this.labelNames.length === 0) this.#series.set(this.key(undefined), this.#empty());
  }

  #empty(): HistogramSeries {
    return { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
  }

  observe(value: number, labels?: Labels<L>): void {
    if (Number.isNaN(value)) return;
    const k = this.key(labels);
    let s = this.#series.get(k);
    if (!s) {
      s = this.#empty();
      this.#series.set(k, s);
    }
    // Stored per bucket; made cumulative when written out.
    const i = this.buckets.findIndex((ub) => value <= ub);
    if (i >= 0) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  samples(): string {
    let out = "";
    for (const [k, s] of this.#series) {
      let acc = 0;
      for (const [i, ub] of this.buckets.entries()) {
        acc += s.counts[i]!;
        out += `${this.name}_bucket${this.labelText(k, ["le", fmt(ub)])} ${acc}\n`;
      }
      out += `${this.name}_bucket${this.labelText(k, ["le", "+Inf"])} ${s.count}\n`;
      out += `${this.name}_sum${this.labelText(k)} ${fmt(s.sum)}\n`;
      out += `${this.name}_count${this.labelText(k)} ${s.count}\n`;
    }
    return out;
  }
}

type AnyMetric = Counter<string> | Gauge<string> | Histogram<string>;

export class Registry {
  readonly #metrics = new Map<string, AnyMetric>();
  readonly #collectors: Array<() => void> = [];

  register<M extends AnyMetric>(m: M): M {
    if (this.#metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.#metrics.set(m.name, m);
    return m;
  }

  counter<L extends string = never>(opts: MetricOptions<L>): Counter<L> {
    return this.register(new Counter<L>(opts) as unknown as AnyMetric) as unknown as Counter<L>;
  }
  gauge<L extends string = never>(opts: MetricOptions<L>): Gauge<L> {
    return this.register(new Gauge<L>(opts) as unknown as AnyMetric) as unknown as Gauge<L>;
  }
  histogram<L extends string = never>(
    opts: MetricOptions<L> & { buckets: readonly number[] },
  ): Histogram<L> {
    return this.register(new Histogram<L>(opts) as unknown as AnyMetric) as unknown as Histogram<L>;
  }

  /** A function run before each exposition, to read gauges from their source. */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  expose(): string {
    for (const c of this.#collectors) {
      try {
        c();
      } catch {
        // A failing collector leaves its gauges at their last value rather than break /metrics.
      }
    }
    let out = "";
    for (const m of this.#metrics.values()) out += m.header() + m.samples();
    return out;
  }
}

/** Label values escape backslash, double quote and newline. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text escapes backslash and newline (quotes stay as they are). */
export function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function fmt(n: number): string {
  if (n === Number.POSITIVE_INFINITY) return "+Inf";
  if (n === Number.NEGATIVE_INFINITY) return "-Inf";
  if (Number.isNaN(n)) return "NaN";
  return String(n);
}
