import type { FleetMonitor } from "../../fleet/monitor.js";
import {
  type DerivedState,
  deriveMachineState,
  type StateInput,
  type StatesNow,
  stateHoldsUntil,
} from "../../fleet/state.js";
import type { ApiDeps } from "../route.js";

declare module "../route.js" {
  interface ApiServices {
    /** The fleet's live state (src/fleet/monitor.ts): machine states, alerts. */
    fleet?: FleetMonitor;
  }
}

/** The bound an app without the fleet monitor (tests, tools) derives states with. */
const DEFAULT_STALL_MS = 120_000;

/** The live states of a list page's machines: the same derivation, one query per table. */
export function machineStates(deps: ApiDeps, machineIds: number[]): Map<number, DerivedState> {
  return machineStatesNow(deps, machineIds).states;
}

/** The same, with whether they still hold later (for the list cache). */
export function machineStatesNow(deps: ApiDeps, machineIds: number[]): StatesNow {
  const fleet = deps.services.fleet;
  if (fleet) return fleet.statesNow(machineIds);
  const sessions = deps.store.sessions.latestFor(machineIds);
  const errors = deps.store.targets.errorsFor(machineIds);
  const now = deps.clock();
  let until = Infinity;
  const states = new Map<number, DerivedState>();
  for (const id of machineIds) {
    const input: StateInput = {
      session: sessions.get(id),
      targetError: errors.get(id),
      ioObservable: false,
      now,
      stallAfterMs: DEFAULT_STALL_MS,
    };
    states.set(id, deriveMachineState(input));
    until = Math.min(until, stateHoldsUntil(input));
  }
  return { states, stillHold: () => deps.clock() < until };
}

/**
 * A machine's live state as the API shows it: the monitor's when the daemon runs one,
 * else derived the same way from the store (I/O then cannot be seen: never "booted").
 */
export function machineState(deps: ApiDeps, machineId: number): DerivedState {
  return machineStates(deps, [machineId]).get(machineId)!;
}
