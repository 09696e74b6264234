import type { Logger } from "pino";
import { CommandError, type CommandRunner, commandRunner } from "../../host/exec.js";
import { errorText } from "../../lib/error-text.js";
import { KeyedLock } from "../../lib/keyed-lock.js";
import { OverlayError } from "./errors.js";
import { overlayIdsAmong, validateLvName, validateOverlayId, validateVgName } from "./names.js";
import {
  isQuarantineName,
  type OverlayOwner,
  ownerMismatch,
  type QuarantinedOverlay,
  quarantineName,
} from "./owner.js";
import {
  type CreatedOverlay,
  OVERLAY_COMMANDS,
  type OverlayDriver,
  type OverlayRef,
  type OverlayUsage,
} from "./types.js";

export interface LvmThinDriverOptions {
  /** The volume group that holds the images' thin pool; every overlay is made in it. */
  vg: string;
  logger: Logger;
  /** Runs lvs, lvcreate, ...; defaults to a runner with OVERLAY_COMMANDS' limits. Tests hand in a recording runner. */
  run?: CommandRunner;
  /** Prefix of overlay LV names, so list() never reports an LV bootfleet did not make. */
  prefix?: string;
  /** Prefix of the LV a reset builds before it takes the overlay's name; must differ from prefix. */
  resetPrefix?: string;
}

export interface LvRow {
  name: string;
  sizeBytes: number;
  /** Percent of the LV's size mapped in the pool; undefined for a non-thin LV. */
  dataPercent: number | undefined;
  origin: string;
  /** lv_attr; its first letter is "V" for a thin volume. */
  attr: string;
  tags: string[];
}

const REPORT_FIELDS = "lv_name,lv_size,data_percent,origin,lv_attr,lv_tags";
// Quarantined overlays are renamed to this prefix; their owner and reason stay in LV tags.
const QUARANTINE_PREFIX = "bfq_";
const OWNER_TAG = /^bfowner_t(\d+)_m(\d+)_i(\d+)_v(\d+|none)$/;
const REASON_TAG = "bfwhy_";

function ownerTag(o: OverlayOwner): string {
  return `bfowner_t${o.targetId}_m${o.machineId}_i${o.imageId}_v${o.imageVersion ?? "none"}`;
}

function ownerOfTags(tags: readonly string[]): OverlayOwner | undefined {
  for (const tag of tags) {
    const m = OWNER_TAG.exec(tag);
    if (m)
      return {
        targetId: Number(m[1]),
        machineId: Number(m[2]),
        imageId: Number(m[3]),
        imageVersion: m[4] === "none" ? null : Number(m[4]),
      };
  }
  return undefined;
}

/** A reason as an LV tag (lvm(8): A-Z a-z 0-9 _ + . - / = ! : & #, at most 1024). */
function reasonTag(reason: string): string {
  return `${REASON_TAG}${reason.replace(/[^A-Za-z0-9_+.\-/=!:&#]/g, "_").slice(0, 200)}`;
}
// lvm2's messages when a VG or thin pool has no room: recognised to give a NO_SPACE error.
const NO_SPACE_PATTERN =
  /insufficient free space|free space in thin pool|out of (data|metadata) space|reached threshold|no space left/i;

/**
 * Overlays as thin snapshots of the image's thin LV, served as block devices. Snapshots share
 * the pool's chunks with their origin until written, so creation is instant at any size.
 */
export function createLvmThinDriver(options: LvmThinDriverOptions): OverlayDriver {
  return new LvmThinDriver(options);
}

class LvmThinDriver implements OverlayDriver {
  readonly name = "lvm-thin" as const;
  readonly #vg: string;
  readonly #prefix: string;
  readonly #resetPrefix: string;
  readonly #log: Logger;
  readonly #run: CommandRunner;
  readonly #lock = new KeyedLock();

  constructor(o: LvmThinDriverOptions) {
    this.#vg = validateVgName(o.vg);
    this.#prefix = o.prefix ?? "bfov_";
    this.#resetPrefix = o.resetPrefix ?? "bfovnew_";
    if (this.#prefix.startsWith(this.#resetPrefix) || this.#resetPrefix.startsWith(this.#prefix)) {
      throw new OverlayError(
        "INVALID_NAME",
        `LV prefixes ${JSON.stringify(this.#prefix)} and ${JSON.stringify(this.#resetPrefix)} must not be prefixes of each other`,
      );
    }
    this.#log = o.logger.child({ overlayDriver: "lvm-thin", vg: this.#vg });
    this.#run = o.run ?? commandRunner(OVERLAY_COMMANDS);
  }

  /** The LV name of an overlay, checked against LVM's naming rules. */
  lvNameOf(overlayId: string): string {
    return validateLvName(`${this.#prefix}${validateOverlayId(overlayId)}`, this.#vg);
  }

  #resetLvNameOf(overlayId: string): string {
    return validateLvName(`${this.#resetPrefix}${validateOverlayId(overlayId)}`, this.#vg);
  }

  #devicePath(lv: string): string {
    return `/dev/${this.#vg}/${lv}`;
  }

  async check(): Promise<void> {
    try {
      await this.#run("vgs", ["--reportformat", "json", "-o", "vg_name", this.#vg]);
    } catch (err) {
      throw new OverlayError(
        "COMMAND_FAILED",
        `lvm-thin overlays need LVM (package lvm2), device-mapper and the volume group ${this.#vg}: ${errorText(err)}`,
        { cause: err },
      );
    }
  }

  async create(
    imagePath: string,
    overlayId: string,
    owner?: OverlayOwner,
  ): Promise<CreatedOverlay> {
    const lv = this.lvNameOf(overlayId);
    const resetLv = this.#resetLvNameOf(overlayId);
    return this.#lock.run(overlayId, async () => {
      const image = this.#imageLv(imagePath, overlayId);
      let rows = await this.#report(overlayId);
      // A thin snapshot outlives its origin, so an existing overlay is served without its image.
      const existing = rows.get(lv);
      let replaced: CreatedOverlay["replaced"];
      const recorded = existing && ownerOfTags(existing.tags);
      const mismatch = owner && recorded ? ownerMismatch(recorded, owner) : undefined;
      if (existing !== undefined && mismatch !== undefined) {
        const reason = `overlay ${overlayId} not adopted: ${mismatch}`;
        const quarantinedAs = await this.#moveToQuarantine(overlayId, lv, reason);
        replaced = { quarantinedAs, reason };
        rows = await this.#report(overlayId);
      } else if (existing !== undefined) {
        // No record: an overlay from before owners were recorded, adopted as it is.
        if (owner && !recorded)
          await this.#lvm(overlayId, "lvchange", [
            "--addtag",
            ownerTag(owner),
            `${this.#vg}/${lv}`,
          ]);
        if (existing.origin !== image) {
          this.#log.warn(
            { overlayId, origin: existing.origin, image },
            "overlay kept although it was made from another image",
          );
        }
        await this.#activate(lv, overlayId);
        return { kind: "block", path: this.#devicePath(lv), sizeBytes: existing.sizeBytes };
      }
      this.#requireThinImage(rows, image, overlayId);
      // A reset interrupted after removing the old overlay left only its replacement.
      if (rows.has(resetLv)) await this.#remove(resetLv, overlayId);
      await this.#snapshot(image, lv, overlayId, owner);
      await this.#activate(lv, overlayId);
      const sizeBytes = await this.#sizeOf(lv, overlayId);
      this.#log.info({ overlayId, lv, image }, "overlay created");
      return {
        kind: "block",
        path: this.#devicePath(lv),
        sizeBytes,
        ...(replaced ? { replaced } : {}),
      };
    });
  }

  async reset(imagePath: string, overlayId: string, owner?: OverlayOwner): Promise<OverlayRef> {
    const lv = this.lvNameOf(overlayId);
    const resetLv = this.#resetLvNameOf(overlayId);
    return this.#lock.run(overlayId, async () => {
      const image = this.#imageLv(imagePath, overlayId);
      const rows = await this.#report(overlayId);
      this.#requireThinImage(rows, image, overlayId);
      if (rows.has(resetLv)) await this.#remove(resetLv, overlayId);
      // The fresh snapshot exists before the old one goes, so a failed snapshot (a full pool)
      // leaves the machine its old disk.
      await this.#snapshot(image, resetLv, overlayId, owner);
      if (rows.has(lv)) await this.#remove(lv, overlayId);
      await this.#lvm(overlayId, "lvrename", [this.#vg, resetLv, lv]);
      await this.#activate(lv, overlayId);
      const sizeBytes = await this.#sizeOf(lv, overlayId);
      this.#log.info({ overlayId, lv, image }, "overlay reset to its image");
      return { kind: "block", path: this.#devicePath(lv), sizeBytes };
    });
  }

  async delete(overlayId: string): Promise<void> {
    const lv = this.lvNameOf(overlayId);
    const resetLv = this.#resetLvNameOf(overlayId);
    return this.#lock.run(overlayId, async () => {
      const rows = await this.#report(overlayId);
      if (rows.has(resetLv)) await this.#remove(resetLv, overlayId);
      if (!rows.has(lv)) return;
      await this.#remove(lv, overlayId);
      this.#log.info({ overlayId, lv }, "overlay deleted");
    });
  }

  quarantine(overlayId: string, reason: string): Promise<string | undefined> {
    const lv = this.lvNameOf(overlayId);
    return this.#lock.run(overlayId, async () => {
      if (!(await this.#report(overlayId)).has(lv)) return undefined;
      return this.#moveToQuarantine(overlayId, lv, reason);
    });
  }

  async quarantined(): Promise<QuarantinedOverlay[]> {
    const out: QuarantinedOverlay[] = [];
    for (const row of (await this.#report(undefined)).values()) {
      if (!row.name.startsWith(QUARANTINE_PREFIX)) continue;
      const name = row.name.slice(QUARANTINE_PREFIX.length);
      if (!isQuarantineName(name)) continue;
      const owner = ownerOfTags(row.tags);
      const why = row.tags.find((t) => t.startsWith(REASON_TAG));
      const stamp = /\.q(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/.exec(name);
      out.push({
        name,
        overlayId: name.slice(0, name.lastIndexOf(".q")),
        reason: why ? why.slice(REASON_TAG.length).replaceAll("_", " ") : "unknown",
        quarantinedAt: stamp
          ? `${stamp[1]}-${stamp[2]}-${stamp[3]}T${stamp[4]}:${stamp[5]}:${stamp[6]}.${stamp[7]}Z`
          : "",
        sizeBytes: row.sizeBytes,
        ...(owner ? { owner } : {}),
      });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async deleteQuarantined(name: string): Promise<boolean> {
    if (!isQuarantineName(name)) return false;
    const lv = validateLvName(`${QUARANTINE_PREFIX}${name}`, this.#vg);
    if (!(await this.#report(undefined)).has(lv)) return false;
    await this.#lvm(undefined, "lvremove", ["-y", `${this.#vg}/${lv}`]);
    this.#log.warn({ name, lv }, "quarantined overlay deleted");
    return true;
  }

  /** Renames the overlay's LV out of the overlay names; its blocks stay as they are. */
  async #moveToQuarantine(overlayId: string, lv: string, reason: string): Promise<string> {
    const name = quarantineName(overlayId, new Date());
    const qlv = validateLvName(`${QUARANTINE_PREFIX}${name}`, this.#vg);
    await this.#lvm(overlayId, "lvrename", [this.#vg, lv, qlv]);
    await this.#lvm(overlayId, "lvchange", ["--addtag", reasonTag(reason), `${this.#vg}/${qlv}`]);
    this.#log.warn({ overlayId, quarantined_as: name, reason }, "overlay quarantined");
    return name;
  }

  async usage(overlayId: string): Promise<OverlayUsage> {
    const lv = this.lvNameOf(overlayId);
    const row = (await this.#report(overlayId)).get(lv);
    if (row === undefined) {
      throw new OverlayError(
        "NOT_FOUND",
        `overlay "${overlayId}": logical volume ${this.#vg}/${lv} does not exist`,
        { overlayId, path: this.#devicePath(lv) },
      );
    }
    // data_percent of a thin snapshot counts the chunks it still shares with its origin, so
    // it cannot tell what the machine wrote: uniqueBytes stays unknown (thin_ls could, from a
    // metadata snapshot, at a cost not worth paying per poll).
    return { allocatedBytes: Math.round(((row.dataPercent ?? 0) / 100) * row.sizeBytes) };
  }

  async list(): Promise<string[]> {
    return overlayIdsAmong((await this.#report(undefined)).keys(), (name) =>
      name.startsWith(this.#prefix) ? name.slice(this.#prefix.length) : undefined,
    );
  }

  /** Accepts "VG/LV" or "/dev/VG/LV"; the image must live in this driver's VG. */
  #imageLv(imagePath: string, overlayId: string): string {
    const m = /^(?:\/dev\/)?([^/]+)\/([^/]+)$/.exec(imagePath);
    const vg = m?.[1];
    const lv = m?.[2];
    if (vg === undefined || lv === undefined) {
      throw new OverlayError(
        "INVALID_NAME",
        `overlay "${overlayId}": image ${JSON.stringify(imagePath)} is not a logical volume (expected VG/LV or /dev/VG/LV)`,
        { overlayId, path: imagePath },
      );
    }
    validateVgName(vg);
    validateLvName(lv, vg);
    if (vg !== this.#vg) {
      throw new OverlayError(
        "INVALID_NAME",
        `overlay "${overlayId}": image ${imagePath} is in volume group ${vg}, but thin snapshots must be made in ${this.#vg}, the overlays' group`,
        { overlayId, path: imagePath },
      );
    }
    return lv;
  }

  #requireThinImage(rows: Map<string, LvRow>, image: string, overlayId: string): void {
    const row = rows.get(image);
    if (row === undefined) {
      throw new OverlayError(
        "NOT_FOUND",
        `overlay "${overlayId}": image logical volume ${this.#vg}/${image} does not exist`,
        { overlayId, path: this.#devicePath(image) },
      );
    }
    if (!row.attr.startsWith("V")) {
      throw new OverlayError(
        "NOT_THIN",
        `overlay "${overlayId}": image ${this.#vg}/${image} is not a thin volume (lv_attr ${row.attr}); lvm-thin overlays snapshot thin volumes only: put the image in a thin pool`,
        { overlayId, path: this.#devicePath(image) },
      );
    }
  }

  // Image versions: a commit freezes a draft overlay as a thin snapshot of it, which shares
  // every chunk with the draft, so it takes the same time at any size. Version LVs are named
  // by the caller and never carry the overlay prefixes, so list() never reports one.
  async freezeVersion(overlayId: string, name: string): Promise<OverlayRef> {
    const draft = this.lvNameOf(overlayId);
    const lv = validateLvName(validateOverlayId(name), this.#vg);
    if (lv.startsWith(this.#prefix) || lv.startsWith(this.#resetPrefix)) {
      throw new OverlayError("INVALID_NAME", `version name ${lv} looks like an overlay's`);
    }
    return this.#lock.run(overlayId, async () => {
      await this.#snapshot(draft, lv, overlayId, undefined);
      await this.#activate(lv, overlayId);
      const sizeBytes = await this.#sizeOf(lv, overlayId);
      this.#log.info({ overlayId, version: lv }, "draft frozen as an image version");
      return { kind: "block", path: this.#devicePath(lv), sizeBytes };
    });
  }

  async deleteVersion(path: string): Promise<void> {
    const lv = this.#imageLv(path, "version");
    if ((await this.#report(undefined)).has(lv)) await this.#remove(lv, lv);
  }

  async #snapshot(
    image: string,
    lv: string,
    overlayId: string,
    owner: OverlayOwner | undefined,
  ): Promise<void> {
    // -kn: without it a thin snapshot carries the activation-skip flag and stays inactive.
    const tag = owner ? ["--addtag", ownerTag(owner)] : [];
    await this.#lvm(overlayId, "lvcreate", ["-s", "-kn", ...tag, "-n", lv, `${this.#vg}/${image}`]);
  }

  async #activate(lv: string, overlayId: string): Promise<void> {
    await this.#lvm(overlayId, "lvchange", ["-ay", "-K", `${this.#vg}/${lv}`]);
  }

  async #remove(lv: string, overlayId: string): Promise<void> {
    await this.#lvm(overlayId, "lvremove", ["-y", `${this.#vg}/${lv}`]);
  }

  async #sizeOf(lv: string, overlayId: string): Promise<number> {
    const row = (await this.#report(overlayId)).get(lv);
    if (row === undefined) {
      throw new OverlayError(
        "NOT_FOUND",
        `overlay "${overlayId}": logical volume ${this.#vg}/${lv} is missing right after it was made`,
        { overlayId, path: this.#devicePath(lv) },
      );
    }
    return row.sizeBytes;
  }

  async #report(overlayId: string | undefined): Promise<Map<string, LvRow>> {
    const { stdout } = await this.#lvm(overlayId, "lvs", [
      "--reportformat",
      "json",
      "--units",
      "b",
      "--nosuffix",
      "-o",
      REPORT_FIELDS,
      this.#vg,
    ]);
    return parseLvsReport(stdout);
  }

  async #lvm(overlayId: string | undefined, cmd: string, args: string[]) {
    try {
      return await this.#run(cmd, args);
    } catch (err) {
      const who = overlayId === undefined ? "" : `overlay "${overlayId}": `;
      const stderr = err instanceof CommandError ? err.stderr : "";
      if (NO_SPACE_PATTERN.test(stderr)) {
        throw new OverlayError(
          "NO_SPACE",
          `${who}${cmd} ${args.join(" ")} failed: the thin pool or volume group ${this.#vg} is full; extend it (lvextend the pool, vgextend the group): ${stderr.trim()}`,
          { overlayId, cause: err },
        );
      }
      throw new OverlayError(
        "COMMAND_FAILED",
        `${who}${cmd} ${args.join(" ")} failed: ${errorText(err)}`,
        { overlayId, cause: err },
      );
    }
  }
}

/** Parses `lvs --reportformat json --units b --nosuffix` output into rows by LV name. */
export function parseLvsReport(stdout: string): Map<string, LvRow> {
  const rows = new Map<string, LvRow>();
  let doc: unknown;
  try {
    doc = JSON.parse(stdout);
  } catch (err) {
    throw new OverlayError("COMMAND_FAILED", `lvs printed no JSON: ${errorText(err)}`, {
      cause: err,
    });
  }
  const reports = (doc as { report?: unknown })?.report;
  if (!Array.isArray(reports)) {
    throw new OverlayError("COMMAND_FAILED", "lvs JSON has no report array");
  }
  for (const report of reports) {
    const lvs = (report as { lv?: unknown })?.lv;
    if (!Array.isArray(lvs)) continue;
    for (const raw of lvs as Record<string, unknown>[]) {
      const name = String(raw.lv_name ?? "");
      if (name === "") continue;
      const percent = String(raw.data_percent ?? "").trim();
      rows.set(name, {
        name,
        // --nosuffix drops the unit, but tolerate a "B" in case a config forces suffixes.
        sizeBytes: Number(String(raw.lv_size ?? "0").replace(/B$/i, "")),
        dataPercent: percent === "" ? undefined : Number(percent),
        origin: String(raw.origin ?? ""),
        attr: String(raw.lv_attr ?? ""),
        tags: String(raw.lv_tags ?? "")
          .split(",")
          .map((t) => t.trim())
          .filter((t) => t !== ""),
      });
    }
  }
  return rows;
}
