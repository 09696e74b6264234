import t from "tap";
import {
  deriveMachineState,
  type SessionStamps,
  STALL_CAUSES,
  type StateInput,
  stateHoldsUntil,
} from "../../src/fleet/state.js";

// The one decision of a machine's live state, as a table: session stamps + time → state.
const T0 = Date.parse("2026-01-01T10:00:00.000Z");
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const STALL = 120_000;

const session = (over: Partial<SessionStamps>): SessionStamps => ({
  status: "starting",
  started_at: at(0),
  ended_at: null,
  dhcp_offer_at: null,
  tftp_done_at: null,
  script_served_at: null,
  iscsi_login_at: null,
  iscsi_logout_at: null,
  io_seen_at: null,
  error: null,
  ...over,
});

type Row = [
  what: string,
  input: Partial<StateInput>,
  state: string,
  phase: string | null,
  since: string | null,
];
const rows: Row[] = [
  ["never booted", { session: undefined }, "unknown", null, null],
  ["woken, nothing seen yet", { session: session({}), now: T0 + 5_000 }, "waking", "waking", at(0)],
  ["DHCP offer", { session: session({ dhcp_offer_at: at(1) }) }, "pxe", "pxe", at(1)],
  [
    "iPXE loaded over TFTP",
    { session: session({ dhcp_offer_at: at(1), tftp_done_at: at(3) }) },
    "ipxe",
    "ipxe",
    at(3),
  ],
  [
    "iPXE's own DHCP restamps the offer: still ipxe, since the later",
    { session: session({ dhcp_offer_at: at(6), tftp_done_at: at(3) }) },
    "ipxe",
    "ipxe",
    at(6),
  ],
  [
    "script served",
    { session: session({ dhcp_offer_at: at(6), tftp_done_at: at(3), script_served_at: at(7) }) },
    "script_served",
    "script_served",
    at(7),
  ],
  [
    "logged in, no I/O yet",
    { session: session({ status: "active", script_served_at: at(7), iscsi_login_at: at(9) }) },
    "iscsi_logged_in",
    "iscsi_logged_in",
    at(9),
  ],
  [
    "booted: the target served I/O",
    {
      session: session({ status: "active", iscsi_login_at: at(9), io_seen_at: at(10) }),
      now: T0 + 3_600_000,
    },
    "booted",
    "booted",
    at(10),
  ],
  [
    "script served, no login past the bound: stalled",
    { session: session({ script_served_at: at(7) }), now: T0 + 7_000 + STALL + 1 },
    "stalled",
    "script_served",
    at(7 + STALL / 1000),
  ],
  [
    "script served, exactly at the bound: not yet",
    { session: session({ script_served_at: at(7) }), now: T0 + 7_000 + STALL },
    "script_served",
    "script_served",
    at(7),
  ],
  [
    "logged in and read nothing past the bound: stalled",
    {
      session: session({ status: "active", iscsi_login_at: at(9) }),
      now: T0 + 9_000 + STALL + 1,
    },
    "stalled",
    "iscsi_logged_in",
    at(9 + STALL / 1000),
  ],
  [
    "logged in long ago, but the driver cannot count I/O: no guess",
    {
      session: session({ status: "active", iscsi_login_at: at(9) }),
      now: T0 + 9_000 + 10 * STALL,
      ioObservable: false,
    },
    "iscsi_logged_in",
    "iscsi_logged_in",
    at(9),
  ],
  [
    "woken and never reached PXE: stalled in waking",
    { session: session({}), now: T0 + STALL + 1 },
    "stalled",
    "waking",
    at(STALL / 1000),
  ],
  [
    "logged out: off",
    {
      session: session({
        status: "stopped",
        iscsi_login_at: at(9),
        io_seen_at: at(10),
        iscsi_logout_at: at(100),
        ended_at: at(100),
      }),
    },
    "off",
    "booted",
    at(100),
  ],
  [
    "session failed: error",
    { session: session({ status: "error", error: "power on failed: BMC", ended_at: at(2) }) },
    "error",
    "waking",
    at(2),
  ],
  [
    "target failed under a live boot: error",
    { session: session({ script_served_at: at(7) }), targetError: "tgtd not running" },
    "error",
    "script_served",
    at(7),
  ],
];

t.test("deriveMachineState: phase stamps and time → state", async (t) => {
  for (const [what, over, state, phase, since] of rows) {
    const input: StateInput = {
      session: undefined,
      ioObservable: true,
      now: T0 + 10_000,
      stallAfterMs: STALL,
      ...over,
    };
    const d = deriveMachineState(input);
    t.equal(d.state, state, `${what}: state`);
    t.equal(d.phase, phase, `${what}: phase`);
    t.equal(d.since, since, `${what}: since`);
    t.same(deriveMachineState(input), d, `${what}: same input, same answer`);
  }
});

t.test("a stall names its phase, how long, and the likely causes", async (t) => {
  const d = deriveMachineState({
    session: session({ script_served_at: at(7) }),
    ioObservable: true,
    now: T0 + 7_000 + 300_000,
    stallAfterMs: STALL,
  });
  t.equal(d.state, "stalled");
  t.match(d.reason, /got its boot script 300 s ago and did not log in/);
  t.same(d.likely_causes, STALL_CAUSES.script_served);
  t.match(d.likely_causes.join(" "), /CHAP mismatch/);
  t.match(d.likely_causes.join(" "), /spanning-tree/);
  const logged = deriveMachineState({
    session: session({ status: "active", iscsi_login_at: at(9) }),
    ioObservable: true,
    now: T0 + 9_000 + 200_000,
    stallAfterMs: STALL,
  });
  t.match(logged.reason, /logged in to its iSCSI target 200 s ago and read nothing/);
  t.match(logged.likely_causes.join(" "), /wrong NIC driver in the image/);
  t.equal(
    deriveMachineState({ session: undefined, ioObservable: true, now: T0, stallAfterMs: STALL })
      .reason,
    null,
  );
});

t.test("stateHoldsUntil: the state stays the same up to it and changes at it", async (t) => {
  const inputs: [string, StateInput][] = rows.map(([what, over]) => [
    what,
    { session: undefined, ioObservable: true, now: T0 + 10_000, stallAfterMs: STALL, ...over },
  ]);
  inputs.push(
    [
      "logged in, no I/O counter: never stalls",
      {
        session: session({ status: "active", iscsi_login_at: at(9) }),
        ioObservable: false,
        now: T0 + 10_000,
        stallAfterMs: STALL,
      },
    ],
    [
      "stalled for 299.6 s: the reason's seconds go up at the next half second",
      {
        session: session({ script_served_at: at(7) }),
        ioObservable: true,
        now: T0 + 7_000 + 299_600,
        stallAfterMs: STALL,
      },
    ],
  );
  let finite = 0;
  for (const [what, input] of inputs) {
    const until = stateHoldsUntil(input);
    const now = deriveMachineState(input);
    t.ok(until > input.now, `${what}: holds now`);
    if (until === Infinity) {
      const later = deriveMachineState({ ...input, now: input.now + 30 * 24 * 3600_000 });
      t.same(later, now, `${what}: time alone changes nothing`);
      continue;
    }
    finite++;
    t.same(deriveMachineState({ ...input, now: until - 1 }), now, `${what}: same up to it`);
    t.not(
      JSON.stringify(deriveMachineState({ ...input, now: until })),
      JSON.stringify(now),
      `${what}: changed at it`,
    );
  }
  t.ok(finite >= 6, "live phases and stalls have a bound");
});
