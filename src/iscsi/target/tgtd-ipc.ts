import { connect } from "node:net";

/**
 * Creating a tgt CHAP account without putting its password on a command line.
 *
 * `tgtadm --op new --mode account --password P` shows P in /proc/PID/cmdline to every
 * local user for as long as tgtadm runs, and tgtadm has no other way to take it (no stdin,
 * no file); tgt-admin only calls tgtadm with the same arguments. So the driver speaks
 * tgtadm's own request to tgtd's management socket: the password travels over a root-only
 * Unix socket and never appears in any process's arguments. Everything without a secret
 * still goes through tgtadm.
 *
 * The request is what tgtadm 1.0.x writes (read from its system calls): a fixed
 * 120-byte header, then "user=U,password=P\0"; tgtd answers with {u32 err, u32 len}.
 * Native byte order: tgtd and this process share the host.
 */
const HEADER_BYTES = 120;
const MODE_ACCOUNT = 7;
const OP_NEW = 0;
const TIMEOUT_MS = 15_000;

/** Where tgtd (`tgtd -C port`) listens for management requests. */
export function tgtdSocketPath(controlPort: number): string {
  return `/var/run/tgtd/socket.${controlPort}`;
}

export function accountRequest(user: string, password: string): Buffer {
  const body = Buffer.from(`user=${user},password=${password}\0`, "utf8");
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt32LE(MODE_ACCOUNT, 0);
  h.writeUInt32LE(OP_NEW, 4);
  h.write("iscsi", 8, "latin1"); // lld, 64 bytes, NUL padded
  h.writeUInt32LE(HEADER_BYTES + body.length, 72);
  h.writeInt32LE(-1, 76); // tid: none
  h.writeBigUInt64LE(0n, 80); // sid
  h.writeBigUInt64LE(0xffffffffffffffffn, 88); // lun: none
  return Buffer.concat([h, body]);
}

/** tgtd's answer code to a management request (0: done). */
export function newTgtAccount(
  controlPort: number,
  user: string,
  password: string,
  socketPath = tgtdSocketPath(controlPort),
): Promise<number> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = connect(socketPath);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`tgtd did not answer on ${socketPath} within ${TIMEOUT_MS / 1000} s`));
    }, TIMEOUT_MS);
    sock.on("connect", () => sock.end(accountRequest(user, password)));
    sock.on("data", (d) => chunks.push(d));
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`tgtd management socket ${socketPath}: ${err.message}`));
    });
    sock.on("close", () => {
      clearTimeout(timer);
      const answer = Buffer.concat(chunks);
      if (answer.length < 8) reject(new Error(`tgtd sent no answer on ${socketPath}`));
      else resolve(answer.readUInt32LE(0));
    });
  });
}
