import type { ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Store } from "../../src/store/index.js";
import { mountLoopFs } from "../iscsi/overlay/loopfs.js";
import { type RunningDaemon, startDaemon, tempDir } from "./daemon.js";
import { TestLan } from "./lan.js";
import { type ApiReply, lanCurl } from "./lan-curl.js";

/**
 * The rig every firmware end-to-end test stands on: a test LAN in a namespace with the
 * site's DHCP server (addresses only), a loop-mounted XFS (reflink) as the daemon's data
 * folder, tgtd in the namespace, and bootfleetd serving the LAN (proxy-DHCP, TFTP, HTTP on
 * :80) with what the test seeded into its store. Everything is removed in teardown.
 */
type Teardown = { teardown(fn: () => void | Promise<void>): void };

export interface LanRigOptions {
  /** The namespace's name prefix (the pid is appended). */
  name: string;
  /** The first three octets of the LAN: the server is .1, the site's DHCP hands out .50-.99. */
  net: string;
  /** Size of the loop-mounted XFS. */
  fsBytes: number;
  /**
   * Fills the data folder and the store before the daemon starts (images go under
   * `data/images`, which exists). The store is closed after it.
   */
  seed(store: Store, data: string): Promise<void> | void;
  /** More daemon environment (e.g. BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE). */
  env?: Record<string, string>;
  /** Bound on the daemon's start (it applies every target before it says ready). */
  daemonTimeoutMs?: number;
}

export type { ApiReply };

export interface LanRig {
  lan: TestLan;
  /** The daemon's data folder (on the XFS). */
  data: string;
  /** The daemon's address on the LAN (HTTP on port 80 there). */
  server: string;
  tgtd: ChildProcess;
  daemon: RunningDaemon;
  adminPassword: string;
  /** tgtadm on this rig's tgtd (its own control port). */
  tgtadm(args: string[]): string;
  /** The REST API as admin, from inside the namespace; the token goes to curl on stdin. */
  api(method: string, path: string, body?: unknown): ApiReply;
}

export async function startLanRig(t: Teardown, opts: LanRigOptions): Promise<LanRig> {
  const server = `${opts.net}.1`;
  const lan = TestLan.create(t, opts.name, [
    { bridge: "br0", address: server, dhcpRange: [`${opts.net}.50`, `${opts.net}.99`] },
  ]);
  const fs = await mountLoopFs("xfs-reflink", opts.fsBytes, opts.name);
  t.teardown(() => fs.cleanup());
  const data = fs.dir;
  const confDir = tempDir(t, "bf-tgt-conf-");

  mkdirSync(join(data, "images"), { recursive: true });
  const store = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000 });
  try {
    await opts.seed(store, data);
  } finally {
    store.close();
  }

  lan.startSiteDhcp(lan.subnets[0]!);
  // A control port of this test's own: tgtd's default would collide with other tests.
  const control = 20_000 + ((process.pid + opts.net.length * 977) % 10_000);
  const tgtadm = (args: string[]) => lan.exec("tgtadm", ["-C", String(control), ...args]);
  const tgtd = lan.spawn("tgtd", ["-f", "-C", String(control), "--iscsi", `portal=${server}:3260`]);
  t.teardown(() => {
    try {
      tgtadm(["--op", "delete", "--mode", "system"]);
    } catch {
      // killed with the namespace's processes
    }
  });
  for (let i = 0; ; i++) {
    try {
      tgtadm(["--op", "show", "--mode", "sys"]);
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const daemon = await startDaemon(t, {
    wrapper: lan.wrapper,
    // A bound, not a timing: applying the targets takes long on a loaded 2-core host.
    timeoutMs: opts.daemonTimeoutMs ?? 240_000,
    env: {
      BOOTFLEET_DATA_DIR: data,
      BOOTFLEET_HTTP_LISTEN: ":80",
      BOOTFLEET_TFTP_PORT: "69",
      BOOTFLEET_DHCP_ENABLED: "true",
      BOOTFLEET_NETBOOT_INTERFACES: "br0",
      BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
      BOOTFLEET_ISCSI_TGT_CONTROL_PORT: String(control),
      BOOTFLEET_ISCSI_TGT_CONF_DIR: confDir,
      BOOTFLEET_ISCSI_SESSION_POLL_MS: "1000",
      ...opts.env,
    },
  });

  const adminPassword = readFileSync(join(data, "initial-admin-password"), "utf8").trim();
  const curl = (method: string, path: string, body?: unknown, token?: string): ApiReply =>
    lanCurl(lan, server, method, path, body, token);
  const login = curl("POST", "/auth/login", { username: "admin", password: adminPassword });
  if (login.status !== 200) throw new Error(`admin login failed: ${JSON.stringify(login.json)}`);
  const token = login.json.access_token as string;

  return {
    lan,
    data,
    server,
    tgtd,
    daemon,
    adminPassword,
    tgtadm,
    api: (method, path, body) => curl(method, path, body, token),
  };
}
