// A minimal iSCSI initiator (RFC 7143) for the boot storm: one connection, login with CHAP
// (MD5, RFC 1994), READ(10) one command at a time, logout. Only what a replay of a recorded
// boot set needs, written here because libiscsi-bin's tools read whole LUNs or fixed
// patterns (iscsi-perf, iscsi-dd) and cannot replay a list of offsets, and open-iscsi
// needs the kernel's initiator and a block device per session, 500 of them here.
//
// One command in flight per session, as iPXE's INT 13h reads are; Linux's initiator from
// the initramfs on keeps more in flight, so this is the slower, simpler client.

import { createHash } from "node:crypto";
import { connect, type Socket } from "node:net";

export interface IscsiLogin {
  host: string;
  port: number;
  /** The source address: the PC's own (its own MAC behind it on the LAN). */
  localAddress?: string;
  initiator: string;
  target: string;
  lun: number;
  chap: { username: string; password: string };
}

const BHS = 48;
const OP = {
  nopOut: 0x00,
  scsiCommand: 0x01,
  loginRequest: 0x03,
  logoutRequest: 0x06,
  nopIn: 0x20,
  scsiResponse: 0x21,
  loginResponse: 0x23,
  dataIn: 0x25,
  logoutResponse: 0x26,
  reject: 0x3f,
} as const;

interface Pdu {
  bhs: Buffer;
  data: Buffer;
}

function keys(pairs: Record<string, string>): Buffer {
  return Buffer.from(
    Object.entries(pairs)
      .map(([k, v]) => `${k}=${v}\0`)
      .join(""),
    "utf8",
  );
}

function parseKeys(data: Buffer): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of data.toString("utf8").split("\0")) {
    const eq = kv.indexOf("=");
    if (eq > 0) m.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return m;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}

/** A LUN in the single-level flat form (SAM): 0..255 in byte 1. */
function lunField(lun: number): Buffer {
  const b = Buffer.alloc(8);
  b[1] = lun;
  return b;
}

export class IscsiSession {
  private sock!: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiting: ((p: Pdu) => void) | undefined;
  private queue: Pdu[] = [];
  private failure: Error | undefined;
  private cmdSn = 1;
  private expStatSn = 0;
  private itt = 1;
  /** Bytes of SCSI data received, for the bench's totals. */
  bytesRead = 0;

  private constructor(private readonly opts: IscsiLogin) {}

  /** Connects and logs in to full feature phase; throws naming the step that failed. */
  static async login(opts: IscsiLogin): Promise<IscsiSession> {
    const s = new IscsiSession(opts);
    await s.open();
    try {
      await s.negotiate();
    } catch (err) {
      s.sock.destroy();
      throw err;
    }
    return s;
  }

  private open(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.sock = connect({
        host: this.opts.host,
        port: this.opts.port,
        ...(this.opts.localAddress ? { localAddress: this.opts.localAddress } : {}),
      });
      this.sock.setNoDelay(true);
      this.sock.once("connect", () => resolve());
      this.sock.on("error", (err) => {
        this.fail(err);
        reject(err);
      });
      this.sock.on("close", () => this.fail(new Error("the target closed the connection")));
      this.sock.on("data", (d) => this.onData(d));
    });
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiting;
    this.waiting = undefined;
    if (w) w({ bhs: Buffer.alloc(0), data: Buffer.alloc(0) });
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < BHS) return;
      const ahs = this.buf[4]! * 4;
      const dlen = this.buf.readUIntBE(5, 3);
      const total = BHS + ahs + pad4(dlen);
      if (this.buf.length < total) return;
      const pdu = {
        bhs: this.buf.subarray(0, BHS),
        data: this.buf.subarray(BHS + ahs, BHS + ahs + dlen),
      };
      this.buf = this.buf.subarray(total);
      if ((pdu.bhs[0]! & 0x3f) === OP.nopIn) {
        this.answerNop(pdu);
        continue;
      }
      const w = this.waiting;
      if (w) {
        this.waiting = undefined;
        w(pdu);
      } else this.queue.push(pdu);
    }
  }

  /** A target's NOP-In with a transfer tag asks for a NOP-Out echo (a ping). */
  private answerNop(pdu: Pdu): void {
    const ttt = pdu.bhs.readUInt32BE(20);
    if (ttt === 0xffffffff) return;
    const out = Buffer.alloc(BHS);
    out[0] = OP.nopOut | 0x40;
    out[1] = 0x80;
    pdu.bhs.copy(out, 8, 8, 16);
    out.writeUInt32BE(0xffffffff, 16);
    out.writeUInt32BE(ttt, 20);
    out.writeUInt32BE(this.cmdSn, 24);
    out.writeUInt32BE(this.expStatSn, 28);
    this.sock.write(out);
  }

  private next(): Promise<Pdu> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = (p) =>
        this.failure && p.bhs.length === 0 ? reject(this.failure) : resolve(p);
    });
  }

  private send(bhs: Buffer, data?: Buffer): void {
    const len = data?.length ?? 0;
    bhs.writeUIntBE(len, 5, 3);
    if (!data || len === 0) {
      this.sock.write(bhs);
      return;
    }
    const padded = Buffer.alloc(pad4(len));
    data.copy(padded);
    this.sock.write(Buffer.concat([bhs, padded]));
  }

  private async loginStep(
    csg: number,
    nsg: number,
    transit: boolean,
    pairs: Record<string, string>,
  ): Promise<{ keys: Map<string, string>; transit: boolean; nsg: number }> {
    const b = Buffer.alloc(BHS);
    b[0] = OP.loginRequest | 0x40;
    b[1] = (transit ? 0x80 : 0) | (csg << 2) | (transit ? nsg : 0);
    // ISID: type 0x80 (random), the rest from the initiator's MAC-derived name is not needed.
    Buffer.from([0x80, 0xbf, 0x00, 0x00, 0x00, 0x01]).copy(b, 8);
    b.writeUInt32BE(0, 16);
    b.writeUInt32BE(this.cmdSn, 24);
    b.writeUInt32BE(this.expStatSn, 28);
    this.send(b, keys(pairs));
    const r = await this.next();
    if ((r.bhs[0]! & 0x3f) !== OP.loginResponse) {
      throw new Error(`login: unexpected opcode 0x${(r.bhs[0]! & 0x3f).toString(16)}`);
    }
    const cls = r.bhs[36]!;
    const detail = r.bhs[37]!;
    if (cls !== 0) {
      throw new Error(
        `login refused: status class ${cls} detail ${detail}` +
          (cls === 2 && detail === 1 ? " (authentication failed)" : ""),
      );
    }
    this.expStatSn = r.bhs.readUInt32BE(24) + 1;
    return { keys: parseKeys(r.data), transit: (r.bhs[1]! & 0x80) !== 0, nsg: r.bhs[1]! & 3 };
  }

  private async negotiate(): Promise<void> {
    const o = this.opts;
    const first = await this.loginStep(0, 1, false, {
      InitiatorName: o.initiator,
      SessionType: "Normal",
      TargetName: o.target,
      AuthMethod: "CHAP",
    });
    if (first.keys.get("AuthMethod") !== "CHAP") {
      throw new Error(`login: the target offered AuthMethod=${first.keys.get("AuthMethod")}`);
    }
    const chal = await this.loginStep(0, 1, false, { CHAP_A: "5" });
    const id = Number(chal.keys.get("CHAP_I"));
    const c = chal.keys.get("CHAP_C") ?? "";
    if (chal.keys.get("CHAP_A") !== "5" || !Number.isInteger(id) || !/^0x[0-9a-f]+$/i.test(c)) {
      throw new Error("login: the target sent no usable MD5 CHAP challenge");
    }
    const response = createHash("md5")
      .update(Buffer.from([id]))
      .update(Buffer.from(o.chap.password, "utf8"))
      .update(Buffer.from(c.slice(2), "hex"))
      .digest("hex");
    let step = await this.loginStep(0, 1, true, {
      CHAP_N: o.chap.username,
      CHAP_R: `0x${response}`,
    });
    if (!step.transit) throw new Error("login: the target did not leave the security stage");
    step = await this.loginStep(1, 3, true, {
      HeaderDigest: "None",
      DataDigest: "None",
      MaxRecvDataSegmentLength: "262144",
      InitialR2T: "Yes",
      ImmediateData: "No",
      MaxBurstLength: "16776192",
      FirstBurstLength: "262144",
      DefaultTime2Wait: "0",
      DefaultTime2Retain: "0",
      MaxOutstandingR2T: "1",
      DataPDUInOrder: "Yes",
      DataSequenceInOrder: "Yes",
      ErrorRecoveryLevel: "0",
      MaxConnections: "1",
    });
    for (let i = 0; !(step.transit && step.nsg === 3); i++) {
      if (i > 4) throw new Error("login: operational negotiation did not end");
      step = await this.loginStep(1, 3, true, {});
    }
  }

  /**
   * READ(10) of `blocks` 512-byte blocks at `lba`; returns the bytes read. A CHECK CONDITION
   * is retried twice: the first command of a session gets tgt's UNIT ATTENTION (power on or
   * reset occurred), which every initiator answers by sending the command again.
   */
  async read10(lba: number, blocks: number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const status = await this.read10Once(lba, blocks);
      if (status === 0) return blocks * 512;
      if (status !== 2 || attempt >= 2) throw new Error(`read: SCSI status ${status}`);
    }
  }

  private async read10Once(lba: number, blocks: number): Promise<number> {
    const itt = ++this.itt;
    const b = Buffer.alloc(BHS);
    b[0] = OP.scsiCommand;
    b[1] = 0x80 | 0x40 | 0x01; // final, read, simple task
    lunField(this.opts.lun).copy(b, 8);
    b.writeUInt32BE(itt, 16);
    b.writeUInt32BE(blocks * 512, 20);
    b.writeUInt32BE(this.cmdSn++, 24);
    b.writeUInt32BE(this.expStatSn, 28);
    b[32] = 0x28;
    b.writeUInt32BE(lba, 34);
    b.writeUInt16BE(blocks, 39);
    this.send(b);
    let got = 0;
    for (;;) {
      const r = await this.next();
      const op = r.bhs[0]! & 0x3f;
      if (r.bhs.readUInt32BE(16) !== itt) throw new Error(`read: reply for another task`);
      if (op === OP.dataIn) {
        got += r.data.length;
        if (r.bhs[1]! & 0x01) {
          this.expStatSn = r.bhs.readUInt32BE(24) + 1;
          if (r.bhs[3] !== 0) return r.bhs[3]!;
          break;
        }
      } else if (op === OP.scsiResponse) {
        this.expStatSn = r.bhs.readUInt32BE(24) + 1;
        if (r.bhs[2] !== 0) throw new Error(`read: iSCSI response ${r.bhs[2]}`);
        if (r.bhs[3] !== 0) return r.bhs[3]!;
        break;
      } else {
        throw new Error(`read: unexpected opcode 0x${op.toString(16)}`);
      }
    }
    if (got !== blocks * 512) throw new Error(`read: ${got} bytes of ${blocks * 512}`);
    this.bytesRead += got;
    return 0;
  }

  /** Logout (close the session) and wait for the target's answer and the socket's end. */
  async logout(): Promise<void> {
    const b = Buffer.alloc(BHS);
    b[0] = OP.logoutRequest | 0x40;
    b[1] = 0x80;
    b.writeUInt32BE(++this.itt, 16);
    b.writeUInt32BE(this.cmdSn, 24);
    b.writeUInt32BE(this.expStatSn, 28);
    this.send(b);
    const r = await this.next();
    if ((r.bhs[0]! & 0x3f) !== OP.logoutResponse || r.bhs[2] !== 0) {
      throw new Error("logout: not a clean logout response");
    }
    this.sock.end();
  }

  destroy(): void {
    this.sock.destroy();
  }
}
