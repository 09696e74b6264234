import t, { type Test } from "tap";
import type { TargetIo } from "../../src/iscsi/target/types.js";
import {
  copySparse,
  type DisklessLab,
  loginPrompt,
  startDisklessLab,
} from "../helpers/diskless-lab.js";
import { BUILD_TIMEOUT_MS, buildImage } from "../helpers/image-recipe.js";
import type { FirmwareClient } from "../helpers/lan.js";

// The firmware paths debian-boot.test.ts does not take, with the real Debian image:
// - BIOS PXE chainloading undionly.kpxe: the NIC's iPXE is answered as plain PXE firmware
//   (BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE), so it loads bootfleet's undionly.kpxe over TFTP;
// - UEFI HTTP boot: OVMF with its PXE switched off asks as HTTPClient, is given the
//   http:// URL of iPXE's EFI binary, fetches it with its own HTTP client, and that iPXE
//   sanboots (the daemon must not chainload it again).
// Each boot's timeline (the API's session view) is printed as a `# timeline` line.
const skip =
  process.getuid?.() === 0
    ? false
    : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU, mmdebstrap";

/** Bounds, not expectations: a Debian boot under TCG takes minutes, more on a loaded machine. */
const LOGIN_TIMEOUT = 1_500_000;
const SETUP_TIMEOUT = 10 * 60_000;
t.setTimeout(BUILD_TIMEOUT_MS + SETUP_TIMEOUT + LOGIN_TIMEOUT + 60_000);

const MACHINES = {
  chain: { name: "lab-fw-chain", mac: "52:54:00:bf:df:01", policy: "reset" as const },
  http: { name: "lab-fw-http", mac: "52:54:00:bf:df:02", policy: "reset" as const },
};

interface SessionView {
  session_id: string;
  status: string;
  boot_method: string | null;
  started_at: string;
  phases: Record<string, string | null>;
  io_seen_at: string | null;
  iscsi_logins: number;
}

/** Seconds from QEMU's start to a stamp, or "-" when the phase was not stamped. */
const since = (start: number, iso: string | null | undefined) =>
  iso ? `+${((Date.parse(iso) - start) / 1000).toFixed(1)} s` : "-";

/**
 * The machine's boot sessions (the API's view) and its boot's timeline line. The booted OS
 * logs in to its disk again (the initramfs, then iscsid at start-up): those logins belong
 * to the boot's one session, counted there, with the latest stamped as the OS's login.
 */
function timeline(lab: DisklessLab, key: keyof typeof MACHINES, start: number, loginAt: number) {
  const list = lab.api("GET", `/sessions?machine_id=${lab.ids[key]!.machine}&limit=10`);
  const sessions = list.json as SessionView[];
  const s = sessions[0];
  if (!s) throw new Error(`no session for ${key}: ${JSON.stringify(list.json)}`);
  const transfer = s.boot_method?.endsWith("-http") ? "HTTP" : "TFTP";
  return {
    sessions,
    session: s,
    line:
      `timeline ${MACHINES[key].name} (${s.boot_method}), from QEMU start: ` +
      `offer ${since(start, s.phases.dhcp_offer_at)}, ` +
      `${transfer} ${since(start, s.phases.tftp_done_at)}, ` +
      `script ${since(start, s.phases.script_served_at)}, ` +
      `iSCSI login ${since(start, s.phases.iscsi_login_at)}, ` +
      `first I/O ${since(start, s.io_seen_at)}, ` +
      `OS's own iSCSI login ${since(start, s.phases.iscsi_relogin_at)} ` +
      `(${s.iscsi_logins} logins in this boot), ` +
      `login prompt +${((loginAt - start) / 1000).toFixed(1)} s`,
  };
}

/**
 * Waits (at most two minutes) until the session poll has seen the machine's disk logged in
 * again. The booted OS takes over its disk in steps (iPXE's login drops when the kernel
 * starts, the initramfs logs in, later iscsid): read between a logout and the next login,
 * the boot's session is ended for that moment. Then says what the daemon saw of its logins.
 */
async function loginsSettled(t: Test, lab: DisklessLab, key: keyof typeof MACHINES) {
  const id = lab.ids[key]!.machine;
  const deadline = Date.now() + 120_000;
  for (;;) {
    const latest = (lab.api("GET", `/sessions?machine_id=${id}&limit=1`).json as SessionView[])[0];
    if (latest?.status === "active" || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const seen = lab.daemon.logs.filter(
    (l) => l.machine_id === id && typeof l.msg === "string" && /^iSCSI (session|login)/.test(l.msg),
  );
  t.comment(`${MACHINES[key].name}: ${seen.map((l) => `${l.time} ${l.msg}`).join("; ")}`);
}

/** One boot, one session, with every phase of the boot stamped on it. */
function oneSessionPerBoot(t: Test, key: keyof typeof MACHINES, view: ReturnType<typeof timeline>) {
  const name = MACHINES[key].name;
  t.same(
    view.sessions.map((x) => `${x.boot_method} ${x.status}`),
    [`${view.session.boot_method} active`],
    `${name}: one boot, one session, live (the OS's logins joined it)`,
  );
  const p = view.session.phases;
  t.ok(
    p.dhcp_offer_at &&
      p.tftp_done_at &&
      p.script_served_at &&
      p.iscsi_login_at &&
      view.session.io_seen_at,
    `${name}: offer, iPXE transfer, script, iSCSI login and first I/O stamped`,
  );
  t.ok(view.session.iscsi_logins >= 1, `${name}: its logins are counted on it`);
}

t.test(
  "the Debian image boots on BIOS PXE + undionly.kpxe and on UEFI HTTP boot",
  { skip },
  async (t) => {
    const image = await buildImage("debian-12", { log: (m) => t.comment(m) });
    t.comment(`image ${image.path}: ${image.built ? "built" : "cached"}`);
    const lab = await startDisklessLab(t, {
      name: "bf-e2e-dfw",
      net: "10.96.0",
      fsBytes: 6 * 1024 ** 3,
      writeGolden: (path) => copySparse(image.path, path),
      machines: MACHINES,
      env: { BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE: "true" },
    });

    // Both at once: two Debian boots under TCG are the cost of this test.
    const started = Date.now();
    const chain = lab.lan.startBiosClient({
      bridge: "br0",
      mac: MACHINES.chain.mac,
      memoryMiB: 512,
    });
    t.teardown(() => chain.kill());
    const http = lab.lan.startUefiClient({ bridge: "br0", mac: MACHINES.http.mac, boot: "http" });
    t.teardown(() => http.kill());
    // What each boot reads from its overlay, across its logins: tgtd counts per session and the
    // OS logs in again during the boot, so the counters are read every 2 s and a drop means a
    // new session (the previous one's last reading is kept).
    const readAcross = (key: keyof typeof MACHINES) => {
      const acc = {
        done: { readBytes: 0, writeBytes: 0, commands: 0 },
        last: undefined as TargetIo | undefined,
      };
      const sample = () => {
        let io: TargetIo;
        try {
          io = lab.targetIo(key);
        } catch {
          return; // not created yet, or between logins
        }
        if (acc.last && io.readBytes + io.writeBytes < acc.last.readBytes + acc.last.writeBytes) {
          acc.done.readBytes += acc.last.readBytes;
          acc.done.writeBytes += acc.last.writeBytes;
          acc.done.commands += acc.last.commands;
        }
        acc.last = io;
      };
      const timer = setInterval(sample, 2000);
      t.teardown(() => clearInterval(timer));
      return (): TargetIo => {
        clearInterval(timer);
        sample();
        return {
          readBytes: acc.done.readBytes + (acc.last?.readBytes ?? 0),
          writeBytes: acc.done.writeBytes + (acc.last?.writeBytes ?? 0),
          commands: acc.done.commands + (acc.last?.commands ?? 0),
        };
      };
    };
    const totals = { chain: readAcross("chain"), http: readAcross("http") };
    const up = async (pc: FirmwareClient, key: keyof typeof MACHINES) => {
      // A kernel panic ends the wait at once (QEMU stays up, halted), naming the panic.
      const seen = await pc.waitFor(
        new RegExp(`${loginPrompt(MACHINES[key].name).source}|Kernel panic - not syncing: [^\\n]*`),
        LOGIN_TIMEOUT,
      );
      if (seen[0].startsWith("Kernel panic")) throw new Error(`${MACHINES[key].name}: ${seen[0]}`);
      return { at: Date.now(), io: totals[key]() };
    };
    const [chainUp, httpUp] = await Promise.all([up(chain, "chain"), up(http, "http")]);

    // BIOS PXE: the ROM was sent to TFTP for undionly.kpxe, whose iPXE got the script.
    // A slow transfer prints its progress (percentages, backspaces) between the name and "ok".
    t.match(
      chain.serial().replaceAll("\b", ""),
      /undionly\.kpxe\.\.\.[\s\d%]*ok/,
      "the BIOS PC loaded undionly.kpxe",
    );
    t.pass(`${MACHINES.chain.name} reached its login prompt (BIOS PXE -> undionly.kpxe)`);
    await loginsSettled(t, lab, "chain");
    const c = timeline(lab, "chain", started, chainUp.at);
    t.comment(c.line);
    t.equal(c.session.boot_method, "bios", "the session says BIOS");
    oneSessionPerBoot(t, "chain", c);

    // UEFI HTTP boot: OVMF's HTTPv4 boot option, not PXE, and one script (no chainload).
    t.match(http.serial(), /Start HTTP Boot over IPv4/, "OVMF took its HTTP boot option");
    t.notMatch(http.serial(), /Start PXE over IPv4/, "and not PXE");
    t.pass(`${MACHINES.http.name} reached its login prompt (UEFI HTTP boot -> snponly.efi)`);
    await loginsSettled(t, lab, "http");
    const h = timeline(lab, "http", started, httpUp.at);
    t.comment(h.line);
    t.equal(h.session.boot_method, "x64-http", "the session says UEFI HTTP boot");
    oneSessionPerBoot(t, "http", h);
    const binaries = lab.daemon.logs.filter((l) => l.msg === "iPXE binary served over HTTP");
    t.same(
      binaries.map((l) => l.file),
      ["snponly.efi"],
      "snponly.efi went over HTTP, once",
    );
    const scripts = lab.daemon.logs.filter((l) => l.msg === "boot script served");
    t.equal(scripts.length, 2, "one script per PC: no chainload loop on either");

    // What one boot read from its overlay, to the login prompt (tgtd's counters, across its logins).
    for (const [key, io] of [
      ["chain", chainUp.io],
      ["http", httpUp.io],
    ] as const) {
      t.ok(io.readBytes > 10 * 2 ** 20, `${key}: the boot read its overlay`);
      t.comment(
        `boot set ${MACHINES[key].name}: ${(io.readBytes / 2 ** 20).toFixed(1)} MiB read, ` +
          `${(io.writeBytes / 2 ** 20).toFixed(1)} MiB written, ${io.commands} commands`,
      );
    }
  },
);
