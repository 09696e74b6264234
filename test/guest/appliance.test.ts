// The appliance as an admin gets it: the .deb installed with apt on a stock Debian 12 guest
// (Debian's own kernel, so LIO is real), managed with systemctl, serving iSCSI targets that
// open-iscsi in the same guest logs in to. One boot and one reboot carry every step, in
// order, because each step builds on the state the previous one left (CI time).
import { copyFileSync } from "node:fs";
import { basename, join } from "node:path";
import t from "tap";
import { tempDir } from "../helpers/daemon.js";
import { freshDeb } from "../package/fresh-deb.js";
import {
  bootGuest,
  GUEST_FILE_TIMEOUT_MS,
  type Guest,
  guestSkipReason,
  guestSteps,
} from "./harness/guest.js";
import { waitUntil } from "./harness/wait.js";

const CONFIG = "/etc/bootfleet/bootfleetd.toml";
const DATA = "/var/lib/bootfleet";
const CONFIGFS = "/sys/kernel/config/target/iscsi";
/** Size of the golden image, and of the region machine A writes (MiB). */
const IMAGE_MIB = 64;
const WRITE_MIB = 16;

// TCG emulation is slow: the guest's steps get minutes, not seconds.
// Image build and boots as the harness counts them, plus the steps below.
t.setTimeout(GUEST_FILE_TIMEOUT_MS + 20 * 60_000);

/** Quotes one argument for the guest's /bin/sh (values come from the API and the test). */
function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The REST API of the daemon in the guest, through QEMU's port forward, as the admin. */
class Api {
  #token: string | undefined;
  constructor(
    readonly base: string,
    readonly password: () => Promise<string>,
  ) {}

  async login(): Promise<void> {
    const res = await fetch(`${this.base}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "admin", password: await this.password() }),
    });
    if (res.status !== 200) throw new Error(`login: ${res.status} ${await res.text()}`);
    this.#token = ((await res.json()) as { access_token: string }).access_token;
  }

  async call<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }> {
    if (!this.#token) await this.login();
    const send = () =>
      fetch(`${this.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.#token}`,
          ...(body instanceof FormData ? {} : { "content-type": "application/json" }),
        },
        body:
          body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
      });
    let res = await send();
    if (res.status === 401) {
      await this.login();
      res = await send();
    }
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as T };
  }

  async ok<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.call<T>(method, path, body);
    if (r.status >= 300)
      throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
}

interface Target {
  id: number;
  iqn: string;
  initiator_iqn: string;
  status: string;
  portal_ip: string;
}

/** open-iscsi in the guest, one iface per initiator name (so A and "another PC" differ). */
class Initiator {
  constructor(
    readonly g: Guest,
    readonly iface: string,
    readonly initiatorIqn: string,
  ) {}

  async setup(): Promise<void> {
    // iscsid is socket-activated and loads iscsi_tcp late: a first login could fail for
    // that alone, which would pass a "refused" check for the wrong reason.
    await this.g.sh(
      `systemctl start iscsid && modprobe iscsi_tcp
       iscsiadm -m iface -I ${q(this.iface)} -o new >/dev/null 2>&1 || true
       iscsiadm -m iface -I ${q(this.iface)} -o update -n iface.initiatorname -v ${q(this.initiatorIqn)}`,
    );
  }

  /** Logs in with the given CHAP credentials; resolves with iscsiadm's exit code. */
  async login(target: Target, user: string, password: string): Promise<number> {
    const node = `-m node -T ${q(target.iqn)} -p ${q(target.portal_ip)} -I ${q(this.iface)}`;
    const r = await this.g.exec(
      [
        "/bin/sh",
        "-c",
        `iscsiadm ${node} -o new >/dev/null
         iscsiadm ${node} -o update -n node.session.auth.authmethod -v CHAP
         iscsiadm ${node} -o update -n node.session.auth.username -v ${q(user)}
         iscsiadm ${node} -o update -n node.session.auth.password -v ${q(password)}
         iscsiadm ${node} -o update -n node.session.initial_login_retry_max -v 1
         iscsiadm ${node} --login`,
      ],
      { timeoutMs: 120_000 },
    );
    return r.code;
  }

  async logout(target: Target): Promise<void> {
    await this.g.sh(
      `iscsiadm -m node -T ${q(target.iqn)} -p ${q(target.portal_ip)} -I ${q(this.iface)} --logout`,
    );
  }

  /** The session id and the SCSI disk of this initiator's login to the target. */
  async session(target: Target): Promise<{ sid: string; disk: string }> {
    // The disk shows up once the kernel has scanned the new session's LUN.
    return waitUntil(
      `${this.initiatorIqn}'s session to ${target.iqn}`,
      () => this.#session(target),
      30_000,
    );
  }

  async #session(target: Target): Promise<{ sid: string; disk: string }> {
    const out = await this.g.sh("iscsiadm -m session -P 3");
    for (const block of out.split(/\n(?=Target: )/)) {
      if (
        !block.startsWith(`Target: ${target.iqn} `) &&
        !block.startsWith(`Target: ${target.iqn}\n`)
      )
        continue;
      if (!block.includes(`Iface Initiatorname: ${this.initiatorIqn}`)) continue;
      const sid = /SID: (\d+)/.exec(block)?.[1];
      const disk = /Attached scsi disk (\w+)/.exec(block)?.[1];
      if (sid && disk) return { sid, disk: `/dev/${disk}` };
    }
    throw new Error(`no session of ${this.initiatorIqn} to ${target.iqn}:\n${out}`);
  }
}

/** sha256 of the first `mib` MiB of a file or device in the guest, read past the page cache. */
async function digest(g: Guest, path: string, mib: number): Promise<string> {
  const direct = path.startsWith("/dev/") ? "iflag=direct" : "";
  const out = await g.sh(`dd if=${q(path)} bs=1M count=${mib} ${direct} status=none | sha256sum`);
  return out.slice(0, 64);
}

const skip = guestSkipReason();

t.test(
  "the .deb on a Debian 12 guest: systemd, LIO with CHAP, reboot, lvm-thin",
  { skip },
  async (t) => {
    const deb = freshDeb(t);
    t.comment(`package: ${deb.how}`);
    const DEB = deb.path;
    const share = tempDir(t, "bf-guest-share-");
    copyFileSync(DEB, join(share, basename(DEB)));

    const g = await bootGuest(t, {
      shareDir: share,
      // vdb: an XFS data_dir (reflink overlays); vdc: an LVM physical volume (thin pool).
      extraDisks: [{ sizeMiB: 1024 }, { sizeMiB: 512 }],
      log: (m) => t.comment(m),
    });
    const step = guestSteps(t, g, () => journal("-n 60"));
    const journal = (since = "") =>
      g.sh(`journalctl -u bootfleetd --no-pager -o cat ${since}`).catch((e: Error) => String(e));

    // The data_dir on XFS with reflink, mounted at boot before the target restore runs.
    await g.sh(
      `mkfs.xfs -q -m reflink=1 /dev/vdb
     mkdir -p ${DATA}
     echo '/dev/vdb ${DATA} xfs defaults 0 2' >> /etc/fstab
     mount ${DATA}`,
    );

    await step("apt installs the .deb, enables and starts the service", async (t) => {
      const r = await g.exec(
        [
          "/bin/sh",
          "-c",
          `DEBIAN_FRONTEND=noninteractive apt-get install -y /host/${basename(DEB)} 2>&1`,
        ],
        { timeoutMs: 600_000 },
      );
      t.equal(r.code, 0, `apt-get install exit 0:\n${r.stdout}`);
      t.match(
        r.stdout,
        /initial-admin-password/,
        "apt's output says where the one-time password is",
      );
      const password = (await g.sh(`cat ${DATA}/initial-admin-password`)).trim();
      t.ok(password.length >= 12, "the one-time password exists");
      t.notOk(
        r.stdout.includes(password),
        "and apt's output (logged in /var/log/apt) does not hold it",
      );
      t.notOk((await journal()).includes(password), "nor does the journal");
      const verify = await g.exec(["systemd-analyze", "verify", "bootfleetd.service"]);
      t.same(
        { code: verify.code, said: verify.stdout + verify.stderr },
        { code: 0, said: "" },
        "systemd-analyze verify has nothing to say about the unit",
      );
      t.equal((await g.sh("systemctl is-enabled bootfleetd")).trim(), "enabled");
      t.equal((await g.sh("systemctl is-active bootfleetd")).trim(), "active");
      t.equal(
        (await g.sh(`stat -c '%a %U' ${DATA} ${DATA}/initial-admin-password`)).trim(),
        "750 root\n600 root",
        "data_dir and the password file are root's alone",
      );
      t.match(
        await g.sh("cat /var/lib/dpkg/info/bootfleet.conffiles"),
        CONFIG,
        "the configuration file is a conffile",
      );
    });

    const api = new Api(g.httpBase, async () =>
      (await g.sh(`cat ${DATA}/initial-admin-password`)).trim(),
    );

    // The admin's configuration: LIO explicitly, sessions polled often (the test waits on them).
    // Reflink overlays: the steps below check fileio targets that LIO restores at boot before
    // bootfleetd runs (dm-snapshot devices exist only once bootfleetd has made them; they
    // have their own guest test, shared-cache.test.ts).
    await g.sh(
      `cat > ${CONFIG} <<'EOF'
[iscsi]
target_driver = "lio"
overlay_driver = "reflink"
session_poll_ms = 1000

[log]
level = "info"
EOF`,
    );

    await step("systemctl start returns only once the daemon is ready", async (t) => {
      // No retry: if systemd called it active before READY=1, the port would not answer yet.
      const out = await g.sh(
        "systemctl restart bootfleetd && curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1/api/health",
      );
      t.equal(out.trim(), "200", "health answered the moment systemctl restart returned");
      const show = await g.sh("systemctl show bootfleetd -p Type -p StatusText -p ActiveState");
      t.match(show, /Type=notify/);
      t.match(show, /ActiveState=active/);
      t.match(show, /StatusText=\S+/, "the daemon's STATUS= reached systemd");
      t.match(await journal(), /"driver":"lio"/, "the daemon chose LIO, as configured");
    });

    await step("the unit runs confined: exposure 4.0 or lower, and still active", async (t) => {
      const r = await g.exec(["systemd-analyze", "security", "--no-pager", "bootfleetd.service"]);
      const m = /Overall exposure level for bootfleetd\.service: (\d+(?:\.\d+)?)/.exec(r.stdout);
      t.ok(m, `systemd-analyze security reports a figure:\n${r.stdout.slice(-400)}`);
      const exposure = Number(m?.[1]);
      t.comment(`systemd-analyze security bootfleetd: exposure ${exposure}`);
      t.ok(exposure <= 4.0, `exposure ${exposure} is 4.0 or lower`);
      t.equal((await g.sh("systemctl is-active bootfleetd")).trim(), "active");
      const show = await g.sh(
        "systemctl show bootfleetd -p CapabilityBoundingSet -p ProtectSystem -p ProtectKernelModules",
      );
      t.notMatch(show, /cap_sys_module/, "no CAP_SYS_MODULE");
      t.match(show, /ProtectSystem=strict/);
      t.match(show, /ProtectKernelModules=yes/);
      // The modules the unit may not load were loaded for it (modules-load.d, postinst).
      t.match(await g.sh("cat /proc/modules"), /^iscsi_target_mod /m, "LIO's iSCSI module is in");
    });

    await step("systemctl reload applies a changed log level without a restart", async (t) => {
      const pid = (await g.sh("systemctl show -p MainPID --value bootfleetd")).trim();
      const cursor = (
        await g.sh("journalctl -u bootfleetd -n 0 --show-cursor --no-pager | tail -1")
      )
        .replace(/^-- cursor: /, "")
        .trim();
      await g.sh(
        `sed -i 's/^level = "info"/level = "debug"/' ${CONFIG} && systemctl reload bootfleetd`,
      );
      const after = await waitUntil(
        "the reload's log line",
        async () => {
          const j = await journal(`--after-cursor=${q(cursor)}`);
          return /configuration reloaded/.test(j) ? j : undefined;
        },
        30_000,
      );
      t.match(after, /log\.level/, "the reload names the key it applied");
      t.equal(
        (await g.sh("systemctl show -p MainPID --value bootfleetd")).trim(),
        pid,
        "same process",
      );
      t.equal((await g.sh("systemctl is-active bootfleetd")).trim(), "active");
    });

    // A golden image and machine A with its target, through the API.
    const form = new FormData();
    form.set("name", "golden");
    const golden = Buffer.alloc(IMAGE_MIB << 20);
    golden.write("BOOTFLEET-GOLDEN", 0);
    form.set("file", new Blob([golden]), "golden.raw");
    const uploaded = await api.ok<{ id: number }>("POST", "/api/images/upload", form);
    await waitUntil(
      "the golden image to be ready",
      async () => {
        const img = await api.ok<{ status: string }>("GET", `/api/images/${uploaded.id}`);
        if (img.status === "error") throw new Error(`image import failed: ${JSON.stringify(img)}`);
        return img.status === "ready" ? img : undefined;
      },
      180_000,
    );

    const makeMachine = async (
      name: string,
      mac: string,
    ): Promise<Target & { machineId: number }> => {
      const m = await api.ok<{ id: number }>("POST", "/api/machines", {
        name,
        mac_address: mac,
        boot_action: "sanboot",
        overlay_policy: "persistent",
      });
      let last: Target | undefined;
      const created = await api.ok<Target>("POST", "/api/targets", {
        machine_id: m.id,
        system_image_id: uploaded.id,
      });
      return waitUntil(
        `${name}'s target to be active`,
        async () => {
          const tg = await api.ok<Target>("GET", `/api/targets/${created.id}`);
          last = tg;
          return tg.status === "active" ? { ...tg, machineId: m.id } : undefined;
        },
        120_000,
        { detail: () => `last seen: ${JSON.stringify(last)}` },
      );
    };

    /** What LIO holds for the target's ACL: the CHAP account bootfleet made for the machine. */
    const chapOf = async (tg: Target) => {
      const acl = `${CONFIGFS}/${tg.iqn}/tpgt_1/acls/${tg.initiator_iqn}/auth`;
      return {
        user: (await g.sh(`cat ${q(`${acl}/userid`)}`)).trim(),
        password: (await g.sh(`cat ${q(`${acl}/password`)}`)).trim(),
      };
    };

    const a = await makeMachine("lab-a", "52:54:00:bf:60:0a");
    const chapA = await chapOf(a);
    const pcA = new Initiator(g, "pc-a", a.initiator_iqn);
    const stranger = new Initiator(g, "stranger", "iqn.2024-01.org.example:another-pc");
    await pcA.setup();
    await stranger.setup();

    await step("LIO serves A's target only to A, with A's CHAP secret", async (t) => {
      t.ok(chapA.user.length > 0 && chapA.password.length >= 12, "LIO holds a CHAP account for A");
      // 24: iscsiadm's "login failed due to authorization failure", not any other error.
      t.equal(
        await pcA.login(a, chapA.user, `${chapA.password}x`),
        24,
        "a wrong CHAP secret is refused",
      );
      t.equal(
        await stranger.login(a, chapA.user, chapA.password),
        24,
        "another initiator name with A's secret is refused",
      );
      t.equal(await pcA.login(a, chapA.user, chapA.password), 0, "A logs in");
      const { disk } = await pcA.session(a);
      // Direct I/O reads whole sectors.
      const head = await g.sh(`dd if=${disk} bs=512 count=1 iflag=direct status=none | head -c 16`);
      t.equal(head, "BOOTFLEET-GOLDEN", "A reads its image through the LUN");
      await g.sh(
        `printf 'WRITTEN-BY-A' | dd of=${disk} bs=512 seek=100 oflag=direct conv=notrunc status=none
       sync`,
      );
      t.equal(
        await g.sh(`dd if=${disk} bs=512 skip=100 count=1 iflag=direct status=none | head -c 12`),
        "WRITTEN-BY-A",
        "and writes to it",
      );
    });

    await step(
      "creating and changing machine B keeps A's session and all of A's writes",
      async (t) => {
        const before = await pcA.session(a);
        // The refused logins above logged connection errors; only later ones count.
        const kernelCursor = (await g.sh("journalctl -k -n 0 --show-cursor --no-pager | tail -1"))
          .replace(/^-- cursor: /, "")
          .trim();
        // A writes WRITE_MIB of random data, pass after pass, until told B is done; then one
        // last pass. Every dd is direct I/O: a dropped session fails the writer.
        await g.sh(
          `head -c ${WRITE_MIB << 20} /dev/urandom > /root/a-data.bin
       rm -f /root/b-done
       cat > /root/a-writer.sh <<'EOF'
set -e
pass() { i=0; while [ $i -lt ${WRITE_MIB} ]; do
  dd if=/root/a-data.bin of=$1 bs=1M count=1 skip=$i seek=$i oflag=direct conv=notrunc status=none
  i=$((i+1)); done; }
n=0
while [ ! -e /root/b-done ]; do pass $1; n=$((n+1)); done
pass $1
echo "passes $((n+1))"
EOF
       systemd-run --unit=a-writer --collect --property=RemainAfterExit=yes /bin/sh /root/a-writer.sh ${before.disk}`,
        );
        const b = await makeMachine("lab-b", "52:54:00:bf:60:0b");
        // Changing B: its target is deleted and made again, with a new IQN ACL and secret.
        await api.ok("DELETE", `/api/targets/${b.id}`);
        await waitUntil(
          "B's target to leave LIO",
          async () =>
            (await g.exec(["test", "-e", `${CONFIGFS}/${b.iqn}`])).code !== 0 ? true : undefined,
          60_000,
        );
        const b2 = await api.ok<Target>("POST", "/api/targets", {
          machine_id: b.machineId,
          system_image_id: uploaded.id,
        });
        await waitUntil(
          "B's new target to be active",
          async () =>
            (await api.ok<Target>("GET", `/api/targets/${b2.id}`)).status === "active"
              ? true
              : undefined,
          120_000,
        );
        await g.sh("touch /root/b-done");
        await waitUntil(
          "A's writer to finish",
          async () => {
            const s = await g.sh("systemctl show a-writer -p SubState -p ExecMainStatus");
            return /SubState=(exited|failed|dead)/.test(s) ? s : undefined;
          },
          300_000,
        );
        const status = await g.sh("systemctl show a-writer -p ExecMainStatus --value");
        t.equal(
          status.trim(),
          "0",
          `A's writer never failed:\n${await g.sh("journalctl -u a-writer -o cat --no-pager")}`,
        );
        const after = await pcA.session(a);
        t.equal(after.sid, before.sid, "A's session is the same one");
        t.notMatch(
          await g.sh(`journalctl -k -o cat --no-pager --after-cursor=${q(kernelCursor)}`),
          /detected conn error|session recovery timed out/,
          "the kernel saw no connection error",
        );
        t.equal(
          await digest(g, after.disk, WRITE_MIB),
          await digest(g, "/root/a-data.bin", WRITE_MIB),
          "all of A's writes landed",
        );
        await g.sh("systemctl stop a-writer || true");
      },
    );

    await step("systemctl stop leaves the LIO targets serving", async (t) => {
      await g.sh("systemctl stop bootfleetd");
      t.equal((await g.exec(["systemctl", "is-active", "bootfleetd"])).stdout.trim(), "inactive");
      t.equal(
        (await g.exec(["test", "-d", `${CONFIGFS}/${a.iqn}`])).code,
        0,
        "A's target is still in LIO",
      );
      const { sid, disk } = await pcA.session(a);
      t.equal(
        await digest(g, disk, 1),
        await digest(g, "/root/a-data.bin", 1),
        "A still reads its disk",
      );
      await g.sh("systemctl start bootfleetd");
      await new Promise((r) => setTimeout(r, 3000));
      t.equal((await pcA.session(a)).sid, sid, "A's session survives the daemon's start");
      t.equal(
        await digest(g, disk, WRITE_MIB),
        await digest(g, "/root/a-data.bin", WRITE_MIB),
        "and A still reads all of its data after the daemon re-applied its target",
      );
    });

    await step("a hung daemon is restarted by the watchdog", async (t) => {
      // The packaged unit's WatchdogSec is 30 s; a runtime drop-in shortens it for the test.
      await g.sh(
        `mkdir -p /run/systemd/system/bootfleetd.service.d
       printf '[Service]\\nWatchdogSec=4\\nTimeoutAbortSec=5\\n' > /run/systemd/system/bootfleetd.service.d/test-watchdog.conf
       systemctl daemon-reload && systemctl restart bootfleetd`,
      );
      const pid = (await g.sh("systemctl show -p MainPID --value bootfleetd")).trim();
      const restarts = Number(
        (await g.sh("systemctl show -p NRestarts --value bootfleetd")).trim(),
      );
      await g.sh(`sleep 8; systemctl is-active bootfleetd`).catch(() => "");
      t.equal(
        (await g.sh("systemctl show -p MainPID --value bootfleetd")).trim(),
        pid,
        "a healthy daemon pings the watchdog and is left alone",
      );
      await g.sh(`kill -STOP ${pid}`);
      const newPid = await waitUntil(
        "systemd to restart the hung daemon",
        async () => {
          const p = (await g.sh("systemctl show -p MainPID --value bootfleetd")).trim();
          const active = (await g.exec(["systemctl", "is-active", "bootfleetd"])).stdout.trim();
          return p !== pid && p !== "0" && active === "active" ? p : undefined;
        },
        90_000,
      );
      t.not(newPid, pid, "a new process runs");
      t.ok(
        Number((await g.sh("systemctl show -p NRestarts --value bootfleetd")).trim()) > restarts,
        "systemd counted a restart",
      );
      t.match(
        await g.sh("journalctl -u bootfleetd --no-pager -o cat | grep -i watchdog || true"),
        /[Ww]atchdog timeout/,
        "the journal says why",
      );
      await g.sh(
        "rm -rf /run/systemd/system/bootfleetd.service.d && systemctl daemon-reload && systemctl restart bootfleetd",
      );
    });

    await step("after a reboot the stock target service restores A, data intact", async (t) => {
      await pcA.logout(a);
      // bootfleetd stays off across the reboot, so what serves A is rtslib's restore alone.
      await g.sh("systemctl disable bootfleetd && systemctl stop bootfleetd && sync");
      await g.reboot();
      t.equal(
        (await g.exec(["systemctl", "is-active", "rtslib-fb-targetctl"])).stdout.trim(),
        "active",
        "the target restore ran",
      );
      t.equal((await g.exec(["systemctl", "is-active", "bootfleetd"])).stdout.trim(), "inactive");
      t.equal(
        (await g.exec(["test", "-d", `${CONFIGFS}/${a.iqn}/tpgt_1/lun/lun_0`])).code,
        0,
        "A's target and LUN are back in LIO",
      );
      t.equal(await pcA.login(a, chapA.user, chapA.password), 0, "A logs in again with its secret");
      const { disk } = await pcA.session(a);
      t.equal(
        await digest(g, disk, WRITE_MIB),
        await digest(g, "/root/a-data.bin", WRITE_MIB),
        "A's data is intact",
      );
      const sid = (await pcA.session(a)).sid;
      await g.sh("systemctl enable --now bootfleetd");
      await new Promise((r) => setTimeout(r, 5000));
      t.equal(
        (await pcA.session(a)).sid,
        sid,
        "bootfleetd adopts the restored target without dropping A",
      );
      t.equal(
        await digest(g, disk, 1),
        await digest(g, "/root/a-data.bin", 1),
        "and A still reads",
      );
    });

    await step("lvm-thin overlays: create, reset and delete on a real thin pool", async (t) => {
      await g.sh(
        `pvcreate -q /dev/vdc && vgcreate -q bfvg /dev/vdc
       lvcreate -q -L 400M -T bfvg/pool
       lvcreate -q -V 64M -T bfvg/pool -n golden
       printf 'LVM-GOLDEN' | dd of=/dev/bfvg/golden bs=512 conv=notrunc status=none && sync`,
      );
      // The installed driver module, run by the bundled runtime, as the daemon would use it.
      const script = `
      import { createLvmThinDriver } from "/usr/lib/bootfleet/dist/iscsi/overlay/lvm-thin.js";
      import pino from "/usr/lib/bootfleet/node_modules/pino/pino.js";
      const d = createLvmThinDriver({ vg: "bfvg", logger: pino({ level: "silent" }) });
      await d.check();
      const op = process.argv[2];
      const r = op === "create" ? await d.create("bfvg/golden", "t9-system")
        : op === "reset" ? await d.reset("bfvg/golden", "t9-system")
        : op === "delete" ? await d.delete("t9-system")
        : await d.list();
      console.log(JSON.stringify(r ?? null));
    `;
      await g.sh(`cat > /root/lvm.mjs <<'EOF'\n${script}\nEOF`);
      const run = (op: string) => g.sh(`/usr/lib/bootfleet/node/bin/node /root/lvm.mjs ${op}`);
      const ref = JSON.parse(await run("create")) as {
        kind: string;
        path: string;
        sizeBytes: number;
      };
      t.same(ref, { kind: "block", path: "/dev/bfvg/bfov_t9-system", sizeBytes: 64 << 20 });
      t.match(
        await g.sh("lvs --noheadings -o lv_name,origin,pool_lv bfvg"),
        /bfov_t9-system\s+golden\s+pool/,
        "a thin snapshot of the image in the pool",
      );
      t.equal(
        await g.sh(`head -c 10 ${ref.path}`),
        "LVM-GOLDEN",
        "the overlay starts as the image",
      );
      await g.sh(`printf 'MACHINE-WR' | dd of=${ref.path} bs=512 conv=notrunc status=none && sync`);
      t.equal(
        await g.sh(`head -c 10 ${ref.path}`),
        "MACHINE-WR",
        "the machine's write is in the overlay",
      );
      t.equal(await g.sh("head -c 10 /dev/bfvg/golden"), "LVM-GOLDEN", "not in the image");
      JSON.parse(await run("reset"));
      t.equal(await g.sh(`head -c 10 ${ref.path}`), "LVM-GOLDEN", "reset gives the image back");
      t.same(JSON.parse(await run("list")), ["t9-system"]);
      await run("delete");
      t.same(JSON.parse(await run("list")), [], "delete removes it");
      t.notMatch(await g.sh("lvs --noheadings -o lv_name bfvg"), /bfov/, "no overlay LV is left");
    });
  },
);
