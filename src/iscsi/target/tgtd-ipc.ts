import { connect } from "node:net";

/**
 * tgtd's management protocol, spoken directly to its Unix socket instead of running
 * tgtadm once per request.
 *
 * Two reasons. Secrets: `tgtadm --op new --mode account --password P` shows P in
 * /proc/PID/cmdline to every local user while it runs, and tgtadm has no other way to take
 * it; over the root-only socket the password is in no process's arguments. Speed: a
 * target takes about ten requests, and starting tgtadm costs milliseconds each from Node
 * (fork, exec, dynamic linking) against microseconds for a request on an open socket;
 * applying 200 targets was 3.8 times a bash loop of tgtadm before this.
 *
 * The driver still thinks in tgtadm's terms: each request is written as the tgtadm
 * arguments it stands for (`--op new --mode target --tid 3 --targetname IQN`), which is
 * also what an admin reads in an error. `tgtadmRequest` turns them into the bytes tgtadm
 * 1.0.x itself writes (read from its system calls with strace): a fixed 120-byte header
 * {u32 mode, u32 op, char lld[64], u32 len, i32 tid, u64 sid, u64 lun, u32 cid, u32
 * host_no, u32 device_type, u32 ac_dir, u32 pack, u32 force}, then the parameters as one
 * NUL-terminated "key=value,..." string. tgtd answers {u32 err, u32 len} and len-8 bytes
 * of text (show and stat output). Native byte order: tgtd and this process share a host.
 */
const HEADER_BYTES = 120;
const TIMEOUT_MS = 15_000;
/** Largest answer accepted (a `show` of thousands of targets is a few MB). */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

const MODES = {
  system: 0,
  target: 1,
  logicalunit: 2,
  portal: 3,
  lld: 4,
  session: 5,
  connection: 6,
  account: 7,
} as const;
const OPS = {
  new: 0,
  delete: 1,
  show: 2,
  bind: 3,
  unbind: 4,
  update: 5,
  stat: 6,
} as const;

/** tgtd's answer codes (tgtadm_err in tgt's usr/tgtadm_error.h), as tgtadm prints them. */
const TGTD_ERRORS = [
  "success",
  "unknown error",
  "out of memory",
  "can't find the driver",
  "can't find the target",
  "can't find the logical unit",
  "can't find the session",
  "can't find the connection",
  "can't find the binding",
  "this target already exists",
  "this logical unit number already exists",
  "this binding already exists",
  "this access control rule already exists",
  "this access control rule does not exist",
  "this account already exists",
  "can't find the account",
  "too many accounts",
  "invalid request",
  "this target already has an outgoing account",
  "this target is still active",
  "this logical unit is still active",
  "this driver is busy",
  "this operation isn't supported",
  "unknown parameter",
  "this device has Prevent Removal set",
];

/** tgtd's answer to binding an initiator a target's ACL already has (TGTADM_ACL_EXIST). */
export const TGTD_ACL_EXISTS = TGTD_ERRORS.indexOf("this access control rule already exists");
/** tgtd's answer to making an account whose name it has (TGTADM_USER_EXISTS). */
export const TGTD_ACCOUNT_EXISTS = TGTD_ERRORS.indexOf("this account already exists");
/** tgtd's answer to deleting an account it does not have (TGTADM_NO_USER). */
export const TGTD_NO_ACCOUNT = TGTD_ERRORS.indexOf("can't find the account");

export function tgtdErrorText(code: number): string {
  return TGTD_ERRORS[code] ?? `tgtd error ${code}`;
}

/** Where tgtd (`tgtd -C port`) listens for management requests. */
export function tgtdSocketPath(controlPort: number): string {
  return `/var/run/tgtd/socket.${controlPort}`;
}

/**
 * The request tgtadm would send for these arguments (without `--control-port` and
 * `--lld`, which the socket and the header's lld stand for). Only the options the driver
 * uses are known; anything else is refused rather than sent half-understood.
 */
export function tgtadmRequest(args: readonly string[]): Buffer {
  let mode: number | undefined;
  let op: number | undefined;
  let tid = -1;
  let lun = 0xffffffffffffffffn;
  let outgoing = 0;
  let force = 0;
  const params: string[] = [];
  let opParams: string | undefined;
  const value = (i: number) => {
    const v = args[i + 1];
    if (v === undefined) throw new Error(`tgtadm option ${args[i]} needs a value`);
    return v;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    switch (a) {
      case "--mode": {
        const m = MODES[value(i) as keyof typeof MODES];
        if (m === undefined) throw new Error(`tgtadm mode ${value(i)} is not known here`);
        mode = m;
        i++;
        break;
      }
      case "--op": {
        const o = OPS[value(i) as keyof typeof OPS];
        if (o === undefined) throw new Error(`tgtadm op ${value(i)} is not known here`);
        op = o;
        i++;
        break;
      }
      case "--tid":
        tid = Number(value(i++));
        break;
      case "--lun":
        lun = BigInt(value(i++));
        break;
      case "--outgoing":
        outgoing = 1;
        break;
      case "--force":
        force = 1;
        break;
      case "--targetname":
      case "--initiator-address":
      case "--initiator-name":
      case "--user":
      case "--password":
      case "--bstype":
        params.push(`${a.slice(2)}=${value(i++)}`);
        break;
      case "--backing-store":
        params.push(`path=${value(i++)}`);
        break;
      case "--params":
      case "--param":
        opParams = value(i++);
        break;
      default:
        throw new Error(`tgtadm option ${a} is not known here`);
    }
  }
  if (mode === undefined || op === undefined) throw new Error("tgtadm needs --op and --mode");
  // tgtadm sends an update's or a portal's parameters behind a word naming them.
  if (opParams !== undefined) {
    const word = mode === MODES.portal ? "portalOps" : "targetOps";
    params.push(`${word} ${opParams},`);
  }
  const body = params.length ? Buffer.from(`${params.join(",")}\0`, "utf8") : Buffer.alloc(0);
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt32LE(mode, 0);
  h.writeUInt32LE(op, 4);
  h.write("iscsi", 8, "latin1"); // lld, 64 bytes, NUL padded
  h.writeUInt32LE(HEADER_BYTES + body.length, 72);
  h.writeInt32LE(tid, 76);
  h.writeBigUInt64LE(0n, 80); // sid
  h.writeBigUInt64LE(lun, 88);
  h.writeUInt32LE(outgoing, 108); // ac_dir
  h.writeUInt32LE(force, 116);
  return Buffer.concat([h, body]);
}

export interface TgtdAnswer {
  /** tgtd's code: 0 done; else see tgtdErrorText. */
  code: number;
  /** What tgtadm would print on stdout (show, stat). */
  text: string;
}

/** Sends one request on its own connection (as tgtadm does) and reads the answer. */
export function tgtdCall(socketPath: string, request: Buffer): Promise<TgtdAnswer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    /** The answer's length from its header, once its first 8 bytes are in. */
    let expected = -1;
    const sock = connect(socketPath);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`tgtd did not answer on ${socketPath} within ${TIMEOUT_MS / 1000} s`));
    }, TIMEOUT_MS);
    sock.on("connect", () => sock.write(request));
    sock.on("data", (d) => {
      chunks.push(d);
      size += d.length;
      if (size > MAX_ANSWER_BYTES) sock.destroy(new Error(`answer over ${MAX_ANSWER_BYTES} bytes`));
      // tgtd keeps the connection open until it is closed: stop once the answer is whole.
      // The header is read once: joining every chunk so far on each chunk made a big listing
      // (500 targets, a megabyte in 64 KiB chunks) cost its size squared in copies.
      if (expected < 0 && size >= 8) expected = Buffer.concat(chunks, 8).readUInt32LE(4);
      if (expected >= 0 && size >= expected) sock.end();
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`tgtd management socket ${socketPath}: ${err.message}`));
    });
    sock.on("close", () => {
      clearTimeout(timer);
      const answer = Buffer.concat(chunks);
      if (answer.length < 8) {
        reject(new Error(`tgtd sent no answer on ${socketPath}`));
        return;
      }
      const len = Math.min(answer.readUInt32LE(4), answer.length);
      const text = answer.subarray(8, len).toString("utf8").replace(/\0+$/, "");
      resolve({ code: answer.readUInt32LE(0), text });
    });
  });
}

/** A management channel for one tgtd: tgtadm-style arguments in, tgtd's answer out. */
export type TgtdManager = (args: readonly string[]) => Promise<TgtdAnswer>;

/**
 * Requests open on one tgtd at a time, at most. tgtd listens with a backlog of 32 (tgt
 * 1.0.85; `ss -xl` shows it): 500 PCs' new CHAP secrets at once (bench/storm) filled it,
 * connect() failed with EAGAIN, and those PCs were told their disk was not ready. Requests
 * past the limit wait here instead, in order. 24 leaves 8 places for an admin's tgtadm.
 * Not fewer: while tgtd serves a storm's reads, its loop takes a request through accept,
 * read and answer at one step per turn, 40-130 ms a request against 0.2-1 ms idle; a request
 * is mostly waiting for its turns, so more in flight answer more a second (500 PCs: the
 * script's p50 went from 6.8 s to 4.0 s with 8 → 24, bench/storm/RESULTS.md).
 */
export const TGTD_MAX_IN_FLIGHT = 24;

export function tgtdManager(controlPort: number, socketPath = tgtdSocketPath(controlPort)) {
  let inFlight = 0;
  const waiting: (() => void)[] = [];
  return async (args: readonly string[]): Promise<TgtdAnswer> => {
    const request = tgtadmRequest(args); // a refused argument fails before taking a slot
    if (inFlight < TGTD_MAX_IN_FLIGHT) inFlight++;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await tgtdCall(socketPath, request);
    } finally {
      // The slot passes straight to the next in line, or is given back.
      const next = waiting.shift();
      if (next) next();
      else inFlight--;
    }
  };
}
