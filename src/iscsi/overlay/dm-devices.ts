import { readdir } from "node:fs/promises";
import type { CommandRunner } from "../../host/exec.js";

/**
 * The loop and device-mapper devices of the dm-snapshot overlay driver, through losetup and
 * dmsetup (util-linux, dmsetup). Nothing here knows about overlays: paths in, devices out.
 */
export interface LoopDevice {
  /** /dev/loopN */
  name: string;
  /** The file behind it, as the kernel reports it (" (deleted)" when unlinked). */
  backFile: string;
  readOnly: boolean;
}

export class DmDevices {
  constructor(
    private readonly run: CommandRunner,
    private readonly sysBlock = "/sys/block",
  ) {}

  async loops(): Promise<LoopDevice[]> {
    const out = (await this.run("losetup", ["--list", "--json", "--output", "NAME,BACK-FILE,RO"]))
      .stdout;
    if (out.trim() === "") return [];
    const parsed = JSON.parse(out) as {
      loopdevices?: { name: string; "back-file": string | null; ro: boolean | string | number }[];
    };
    return (parsed.loopdevices ?? []).map((l) => ({
      name: l.name,
      backFile: l["back-file"] ?? "",
      readOnly: l.ro === true || l.ro === "1" || l.ro === 1,
    }));
  }

  /**
   * Attaches a file. `readOnly` origins are buffered (direct-io off) on purpose: their reads
   * go through the file's page cache, which is what every machine's device then shares.
   * Copy-on-write stores use direct I/O: each is one machine's, caching it twice helps nobody.
   */
  async attach(file: string, how: { readOnly: boolean }): Promise<string> {
    const args = how.readOnly
      ? ["--find", "--show", "--read-only", "--direct-io=off", file]
      : ["--find", "--show", "--direct-io=on", file];
    return (await this.run("losetup", args)).stdout.trim();
  }

  /**
   * Detaches a loop device. One still held open (by a dm device) is only marked to detach
   * itself at its last close (the kernel's autoclear): removing the dm device then leaves
   * no loop device behind, even when bootfleet is not running.
   */
  async detach(loop: string): Promise<void> {
    await this.run("losetup", ["--detach", loop]);
  }

  /** Whether anything (a dm device) holds a loop device, from sysfs. */
  async hasHolders(loop: string): Promise<boolean> {
    const base = loop.replace(/^\/dev\//, "");
    const holders = await readdir(`${this.sysBlock}/${base}/holders`).catch(() => []);
    return holders.length > 0;
  }

  async exists(name: string): Promise<boolean> {
    const list = await this.names();
    return list.has(name);
  }

  /** Names of the dm devices whose name starts with `prefix`. */
  async names(prefix = ""): Promise<Set<string>> {
    const out = (
      await this.run("dmsetup", ["info", "-c", "--noheadings", "--separator", "\t", "-o", "name"])
    ).stdout;
    const names = new Set<string>();
    for (const line of out.split("\n")) {
      const name = line.trim();
      // "No devices found" is what dmsetup prints when there are none.
      if (name.length > 0 && name.startsWith(prefix) && name !== "No devices found") {
        names.add(name);
      }
    }
    return names;
  }

  async create(name: string, uuid: string, table: string): Promise<void> {
    await this.run("dmsetup", ["create", name, "--uuid", uuid, "--table", table]);
  }

  async remove(name: string): Promise<void> {
    // --retry: udev's probe of a device just changed may hold it open for a moment.
    await this.run("dmsetup", ["remove", "--retry", name]);
  }

  /** `dmsetup status` of a snapshot: sectors of its store in use, or undefined when invalid. */
  async snapshotUse(name: string): Promise<{ usedSectors: number; totalSectors: number }> {
    const out = (await this.run("dmsetup", ["status", name])).stdout.trim();
    // "0 262144 snapshot 1234/270000 16"
    const m = /snapshot (\d+)\/(\d+)/.exec(out);
    if (!m) throw new Error(`dm device ${name} is not a valid snapshot: ${out}`);
    return { usedSectors: Number(m[1]), totalSectors: Number(m[2]) };
  }

  // --- device-mapper statistics (the kernel's statistics.rst), for boot-set recording ---

  /**
   * Starts counting I/O on the whole device in areas of `areaSectors`, tagged with
   * `programId` (so a later process can find the region again); returns the region id.
   */
  async statsCreate(name: string, areaSectors: number, programId: string): Promise<number> {
    const out = await this.#message(name, `@stats_create - ${areaSectors} ${programId}`);
    const id = Number(out.trim());
    if (out.trim() === "" || !Number.isInteger(id)) {
      throw new Error(`@stats_create on ${name} answered ${JSON.stringify(out.slice(0, 80))}`);
    }
    return id;
  }

  /** The counters of every area of a region, one line per area. */
  statsPrint(name: string, region: number): Promise<string> {
    return this.#message(name, `@stats_print ${region}`);
  }

  async statsDelete(name: string, region: number): Promise<void> {
    await this.#message(name, `@stats_delete ${region}`);
  }

  /** Ids of the device's regions tagged `programId` (`<id>: <start>+<len> <step> <prog> <aux>`). */
  async statsList(name: string, programId: string): Promise<number[]> {
    const out = await this.#message(name, `@stats_list ${programId}`);
    return out
      .split("\n")
      .map((l) => /^(\d+):\s+\S+\s+\S+\s+(\S+)/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null && m[2] === programId)
      .map((m) => Number(m[1]));
  }

  async #message(name: string, message: string): Promise<string> {
    return (await this.run("dmsetup", ["message", name, "0", message])).stdout;
  }

  /** The device-mapper targets the kernel has loaded. */
  async targets(): Promise<string[]> {
    const out = (await this.run("dmsetup", ["targets"])).stdout;
    return out
      .split("\n")
      .map((l) => l.trim().split(/\s+/)[0] ?? "")
      .filter(Boolean);
  }
}
