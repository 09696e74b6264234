// The production path, end to end: a PC boots the Debian 12 image (images/debian-12) from
// the .deb installed in a Debian 12 guest, whose kernel target (LIO) serves it with the
// default overlay driver ("auto": dm-snapshot with LIO). The guest's second NIC is on a tap
// of a test LAN (a bridge in a namespace of this test, dnsmasq handing out addresses), where
// bootfleetd answers in proxy mode; the PC is a QEMU BIOS machine whose NIC boots with its
// iPXE ROM. The built image reaches the guest as a read-only disk (no upload over QEMU's
// user-mode network): the test puts it on the guest's data disk on the host, in the drop
// folder, before the guest boots; the daemon imports it from there once installed. After the
// boot the test reads the same disk on the host to check the golden image's checksum (host
// work at host speed: a 2 GiB sha256 under TCG took minutes).
import { execFileSync } from "node:child_process";
import { closeSync, copyFileSync, mkdirSync, openSync, truncateSync } from "node:fs";
import { basename, join } from "node:path";
import t, { type Test } from "tap";
import { parseBootSet } from "../../src/iscsi/warm.js";
import { tempDir } from "../helpers/daemon.js";
import { sha256 } from "../helpers/diskless-lab.js";
import { BUILD_TIMEOUT_MS, buildImage } from "../helpers/image-recipe.js";
import { TestLan } from "../helpers/lan.js";
import { lanCurl } from "../helpers/lan-curl.js";
import { freshDeb } from "../package/fresh-deb.js";
import { bootGuest, GUEST_FILE_TIMEOUT_MS, guestSkipReason, guestSteps } from "./harness/guest.js";
import { waitUntil } from "./harness/wait.js";

const NET = "10.94.0";
const GUEST_IP = `${NET}.2`;
const GUEST_LAN_MAC = "52:54:00:bf:94:02";
const PC = { name: "lio-pc", mac: "52:54:00:bf:94:10" };
const CONFIG = "/etc/bootfleet/bootfleetd.toml";
const DATA = "/var/lib/bootfleet";
/** The drop folder ([images] import_dir's default, <images_dir>/import). */
const DROP = `${DATA}/images/import`;
/** Where the host puts the image on the data disk: beside the drop folder, not in it. */
const INCOMING_IN_DATA = "incoming";
const DATA_DISK_MIB = 4096;

/**
 * Runs `fn` with the XFS file system in `file` mounted on the host. Read-write also for
 * reading: the guest's QEMU was stopped, not shut down, and XFS replays the log it left,
 * which a read-only loop device refuses.
 */
async function withHostMount<T>(
  t: Test,
  file: string,
  fn: (dir: string) => T | Promise<T>,
): Promise<T> {
  const dir = tempDir(t, "bf-lio-boot-mnt-");
  execFileSync("mount", ["-t", "xfs", "-o", "loop", file, dir]);
  try {
    return await fn(dir);
  } finally {
    execFileSync("umount", [dir]);
  }
}

/** Bounds, not expectations: each guest step and the PC's boot run under TCG on a loaded host. */
const STEP_MS = 600_000;
const LOGIN_TIMEOUT = 1_800_000;
t.setTimeout(BUILD_TIMEOUT_MS + GUEST_FILE_TIMEOUT_MS + 4 * STEP_MS + LOGIN_TIMEOUT);

interface SessionView {
  boot_method: string | null;
  phases: Record<string, string | null>;
  io_seen_at: string | null;
}

/**
 * The guest's REST API as the admin, from the LAN's namespace to the guest's LAN address
 * (where a PC would reach it); a status of 300 or more throws.
 */
function lanApi(lan: TestLan, password: string) {
  // biome-ignore lint/suspicious/noExplicitAny: JSON from the API, read by the test
  const curl = (method: string, path: string, body?: unknown, token?: string): any => {
    const { status, json } = lanCurl(lan, GUEST_IP, method, path, body, token);
    if (status >= 300) throw new Error(`${method} ${path}: ${status} ${JSON.stringify(json)}`);
    return json;
  };
  const token = curl("POST", "/auth/login", { username: "admin", password }).access_token;
  return (method: string, path: string, body?: unknown) => curl(method, path, body, token);
}

/** Seconds from the PC's power-on to a stamp, or "-" when the phase was not stamped. */
const since = (start: number, iso: string | null | undefined) =>
  iso ? `+${((Date.parse(iso) - start) / 1000).toFixed(1)} s` : "-";

t.test(
  "a PC boots the Debian image from LIO and dm-snapshot in the guest",
  { skip: guestSkipReason() },
  async (t) => {
    const deb = freshDeb(t);
    t.comment(`package: ${deb.how}`);
    const image = await buildImage("debian-12", { log: (m) => t.comment(m) });
    t.comment(`image ${image.path}: ${image.built ? "built" : "cached"}`);
    const imageSum = await sha256(image.path);
    const share = tempDir(t, "bf-lio-boot-share-");
    copyFileSync(deb.path, join(share, basename(deb.path)));
    // The guest's data disk, made on the host: XFS (as the appliance's data folder would
    // be, for reflink), with the built image on it, outside the drop folder: it is moved in
    // once the daemon runs with its final configuration (a restart would cut its import).
    const dataDisk = join(tempDir(t, "bf-lio-boot-data-"), "data.raw");
    closeSync(openSync(dataDisk, "w"));
    truncateSync(dataDisk, DATA_DISK_MIB * 1024 * 1024);
    execFileSync("mkfs.xfs", ["-q", dataDisk]);
    await withHostMount(t, dataDisk, (dir) => {
      mkdirSync(join(dir, INCOMING_IN_DATA));
      execFileSync("cp", [
        "--sparse=always",
        image.path,
        join(dir, INCOMING_IN_DATA, "debian-12.raw"),
      ]);
    });

    const lan = TestLan.create(t, "bf-lio", [
      { bridge: "br0", address: `${NET}.1`, dhcpRange: [`${NET}.50`, `${NET}.99`] },
    ]);
    const g = await bootGuest(t, {
      shareDir: share,
      // vdb: the data folder (XFS), holding the image to import.
      extraDisks: [{ file: dataDisk }],
      lanNic: { netns: lan.ns, tap: lan.addTap("br0"), mac: GUEST_LAN_MAC },
      memoryMiB: 2048,
      // Other engineers' work shares these 2 cores: a TCG boot may take many minutes.
      bootTimeoutMs: 900_000,
      log: (m) => t.comment(m),
    });
    const journal = () =>
      g.sh("journalctl -u bootfleetd --no-pager -o cat").catch((e: Error) => String(e));
    const step = guestSteps(t, g, async () => (await journal()).slice(-6000));

    let lanIf = "";
    await step("the .deb installed, serving the LAN with the production drivers", async (t) => {
      // The guest's LAN NIC gets a fixed address (networkd would ask DHCP on every NIC).
      lanIf = (
        await g.sh(
          `ip -o link | awk -F': ' 'tolower($0) ~ /${GUEST_LAN_MAC}/ { print $2 }' | cut -d@ -f1`,
        )
      ).trim();
      t.match(lanIf, /^\w+$/, "the guest sees its LAN NIC");
      await g.sh(
        `mkdir -p ${DATA} && mount /dev/vdb ${DATA}
         printf '[Match]\\nMACAddress=${GUEST_LAN_MAC}\\n[Network]\\nAddress=${GUEST_IP}/24\\nLinkLocalAddressing=no\\nIPv6AcceptRA=no\\n' > /etc/systemd/network/10-lan.network
         networkctl reload && networkctl reconfigure ${lanIf}`,
        { timeoutMs: STEP_MS },
      );
      await waitUntil(
        "the guest's LAN address",
        async () =>
          (await g.sh(`ip -4 -o addr show dev ${lanIf}`)).includes(GUEST_IP) ? 1 : undefined,
        60_000,
      );
      lan.startSiteDhcp(lan.subnets[0]!);
      const r = await g.exec(
        [
          "/bin/sh",
          "-c",
          `DEBIAN_FRONTEND=noninteractive apt-get install -y /host/${basename(deb.path)} 2>&1`,
        ],
        { timeoutMs: STEP_MS },
      );
      t.equal(r.code, 0, `apt-get install exit 0:\n${r.stdout.slice(-3000)}`);
      // Only the LAN interface is set (the default would be the user-mode NIC, which holds
      // the default route), and sessions are polled each second so the timeline's login
      // and first-I/O stamps are to the second. target_driver and overlay_driver stay "auto".
      await g.sh(
        `cat > ${CONFIG} <<'EOF'
[netboot]
interfaces = ["${lanIf}"]

[iscsi]
session_poll_ms = 1000
# Longer than any boot under TCG: the PC's next boot (its disk reset) ends the recording.
boot_set_record_seconds = 7200
EOF
systemctl restart bootfleetd`,
        { timeoutMs: STEP_MS },
      );
      const lines = (await journal())
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { msg?: string; driver?: string; reason?: string });
      t.match(JSON.stringify(lines), /"driver":"lio"/, "the target driver is LIO");
      const overlay = lines.filter((l) => l.msg === "overlay driver selected").at(-1);
      t.equal(overlay?.driver, "dm-snapshot", `auto took dm-snapshot: ${overlay?.reason}`);
    });

    const password = (await g.sh(`cat ${DATA}/initial-admin-password`)).trim();
    const api = lanApi(lan, password);

    let imageId = 0;
    await step("the image dropped into the import folder is imported", async (t) => {
      // One rename on the same file system, as an admin drops a finished file.
      await g.sh(
        `mkdir -p ${DROP} && mv ${DATA}/${INCOMING_IN_DATA}/debian-12.raw ${DROP}/debian-12.raw`,
      );
      const img = await waitUntil(
        "the dropped image to be ready",
        () => {
          const found = (api("GET", "/images") as { name: string; status: string }[]).find(
            (i) => i.name === "debian-12",
          );
          if (found?.status === "error") throw new Error(`import failed: ${JSON.stringify(found)}`);
          return found?.status === "ready" ? found : undefined;
        },
        STEP_MS,
      );
      imageId = (img as unknown as { id: number }).id;
      t.equal(
        (img as unknown as { checksum_sha256: string }).checksum_sha256,
        imageSum,
        "the import hashed the very image that was built",
      );
    });

    let machineId = 0;
    await step("the PC's machine and target, on dm-snapshot", async (t) => {
      machineId = api("POST", "/machines", {
        name: PC.name,
        mac_address: PC.mac,
        boot_action: "sanboot",
        overlay_policy: "reset",
      }).id;
      const created = api("POST", "/targets", { machine_id: machineId, system_image_id: imageId });
      let last: { status?: string; status_reason?: string | null; portal_ip?: string } = {};
      const target = await waitUntil(
        "the PC's target to be active",
        () => {
          last = api("GET", `/targets/${created.id}`);
          // An error is final: its reason (what the driver or the kernel refused) ends the wait.
          return last.status === "active" || last.status === "error" ? last : undefined;
        },
        STEP_MS,
        { detail: () => `target: ${JSON.stringify(last)}` },
      );
      t.equal(target.status, "active", `the target is active (reason: ${target.status_reason})`);
      t.equal(target.portal_ip, GUEST_IP, "the portal is the guest's LAN address");
    });

    await step(`${PC.name} boots to its login prompt`, async (t) => {
      // The stamps come from the guest's clock: its offset from ours, measured now.
      const asked = Date.now();
      const guestNow = Number((await g.sh("date +%s%3N")).trim());
      const skewMs = guestNow - (asked + Date.now()) / 2;
      const started = Date.now();
      const pc = lan.startBiosClient({ bridge: "br0", mac: PC.mac, memoryMiB: 512 });
      t.teardown(() => pc.kill());
      // A kernel panic ends the wait at once (QEMU stays up, halted), naming the panic.
      const seen = await pc.waitFor(
        new RegExp(`\\n${PC.name} login:|Kernel panic - not syncing: [^\\n]*`),
        LOGIN_TIMEOUT,
      );
      const loginAt = Date.now();
      t.notMatch(seen[0], /Kernel panic/, "no kernel panic");
      t.pass(`${PC.name} reached its login prompt under its own name`);

      // What served it: a dm-snapshot device of the imported version, in LIO.
      const dm = await g.sh("dmsetup ls");
      t.match(dm, /^bfsnap-\S+/m, `a dm-snapshot device serves the PC:\n${dm}`);
      const loops = await g.sh("losetup --list --noheadings --output NAME,RO,BACK-FILE");
      const versionFile = /\s1\s+(\S+\.raw)\s*$/m.exec(loops)?.[1];
      t.ok(versionFile, `the image version is a read-only loop device:\n${loops}`);
      const backstores = await g.sh("ls /sys/kernel/config/target/core/");
      t.match(backstores, /iblock_/, `LIO serves a block backstore:\n${backstores}`);

      // The timeline: the firmware's session (the booted OS logs in again and opens an
      // "iscsi" session of its own).
      const sessions = api("GET", `/sessions?machine_id=${machineId}&limit=10`) as SessionView[];
      const s = sessions.find((x) => x.boot_method !== "iscsi");
      t.ok(s, `the firmware's boot session: ${JSON.stringify(sessions)}`);
      if (s) {
        const on = started + skewMs; // power-on, on the guest's clock
        t.ok(s.phases.dhcp_offer_at, "offer stamped");
        t.equal(s.phases.tftp_done_at, null, "no TFTP: the NIC's iPXE ROM was sent to its script");
        t.ok(s.phases.script_served_at, "script stamped");
        t.ok(s.phases.iscsi_login_at, "iSCSI login stamped");
        t.ok(s.io_seen_at, "first I/O stamped");
        t.comment(
          `timeline ${PC.name} (${s.boot_method}, LIO + dm-snapshot in the guest, TCG), from power-on: ` +
            `offer ${since(on, s.phases.dhcp_offer_at)}, ` +
            `TFTP ${since(on, s.phases.tftp_done_at)}, ` +
            `script ${since(on, s.phases.script_served_at)}, ` +
            `iSCSI login ${since(on, s.phases.iscsi_login_at)}, ` +
            `first I/O ${since(on, s.io_seen_at)}, ` +
            `login prompt +${((loginAt - started) / 1000).toFixed(1)} s ` +
            `(guest clock ${skewMs >= 0 ? "+" : ""}${(skewMs / 1000).toFixed(1)} s from the host's)`,
        );
      }
      pc.kill();

      // Its first boot was the version's first: recorded as the version's boot set, which
      // the PC's next boot ends (reset-on-reboot: its disk goes) and writes for warming.
      if (versionFile) {
        const setFile = `${versionFile}.bootset.csv`;
        t.equal((await g.exec(["test", "-e", setFile])).code, 1, "not written before it ends");
        const again = lan.startBiosClient({ bridge: "br0", mac: PC.mac, memoryMiB: 512 });
        t.teardown(() => again.kill());
        const csv = await waitUntil(
          "the boot set to be written at the PC's next boot",
          async () => {
            const r = await g.exec(["cat", setFile]);
            return r.code === 0 ? r.stdout : undefined;
          },
          STEP_MS,
        );
        again.kill();
        const ranges = parseBootSet(csv);
        const bytes = ranges.reduce((a, r) => a + r.length, 0);
        t.comment(`boot set recorded from the PC's boot: ${ranges.length} ranges, ${bytes} bytes`);
        t.equal(ranges[0]?.offset, 0, "it holds the boot sector the BIOS read first");
        t.ok(bytes >= 1 << 20 && bytes < 2 ** 30, `a boot's worth: ${bytes} bytes`);
        t.match(await journal(), /"msg":"boot set recorded"/, "the daemon logged the recording");
      }
      if (versionFile?.startsWith(`${DATA}/`)) {
        // The version file, read on the host from the guest's data disk once QEMU is gone.
        await g.sh("sync");
        await g.stop();
        const after = await withHostMount(t, dataDisk, (dir) =>
          sha256(join(dir, versionFile.slice(DATA.length + 1))),
        );
        t.equal(after, imageSum, "the golden image's checksum is unchanged after the boot");
      } else {
        t.fail(`the version file is not in ${DATA}: ${versionFile}`);
      }
    });
  },
);
