export {
  type BusEvent,
  type BusStats,
  type Delivery,
  EVENT_TYPES,
  EventBus,
  type EventBusOptions,
  type EventPayloads,
  type EventType,
  type OverflowPolicy,
  type SubscribeOptions,
  type Subscription,
} from "./bus.js";
