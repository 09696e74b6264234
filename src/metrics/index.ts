export {
  ARCH_LABELS,
  BOOT_ACTIONS,
  BOOT_PHASES,
  BootfleetMetrics,
  type BootPhase,
} from "./bootfleet.js";
export {
  CONTENT_TYPE,
  Counter,
  escapeHelp,
  escapeLabel,
  Gauge,
  Histogram,
  type LabelSpec,
  Registry,
} from "./registry.js";
