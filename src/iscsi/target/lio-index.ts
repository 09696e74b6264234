import { basename, dirname, join, resolve } from "node:path";

/** The reads the index needs (LIO's ConfigFs has them; named here to keep imports one-way). */
export interface ConfigfsReader {
  readdir(path: string): Promise<string[]>;
  isDir(path: string): Promise<boolean>;
  isLink(path: string): Promise<boolean>;
  readlink(path: string): Promise<string>;
}

const HBA = /^(.+)_(\d+)$/;

async function names(fs: ConfigfsReader, path: string): Promise<string[]> {
  return fs.readdir(path).catch(() => [] as string[]);
}

function sameNames(known: Set<string>, listed: string[]): boolean {
  return known.size === listed.length && listed.every((n) => known.has(n));
}

/**
 * What the LIO applier knows of configfs between its calls: the HBAs under `core/`, the
 * storage objects in them, and which TPG LUNs link to each object.
 *
 * WHY: without it every apply listed `core/` and stat'ed every HBA to find one object and a
 * free HBA number, and every removal walked every target's LUNs to learn whether an object
 * was still exported: O(N) configfs operations a call, O(N^2) for a room (removing 200
 * targets one by one did not finish in 16 minutes in the Debian guest).
 *
 * Built from configfs on first use, so a restarted daemon (adopt) rebuilds it from what the
 * kernel holds; the LUN links only when a removal first asks whether an object is in use.
 * The applier reports each change it makes. Each call starts with `sync`: one listing of
 * `core/` and one of `iscsi/`; when either differs from what the index expects, something
 * else (targetcli, an administrator) added or removed an HBA or a target, and the index is
 * rebuilt. After a failed call the applier drops it (`invalidate`): configfs may then hold
 * part of a change the index never heard of.
 */
export class ConfigfsIndex {
  readonly #fs: ConfigfsReader;
  readonly #root: string;
  /** Names listed in core/ (HBAs and the kernel's own "alua"), as the next listing must read. */
  #coreNames?: Set<string>;
  /** Names listed in iscsi/ (targets and "discovery_auth"). */
  #fabricNames?: Set<string>;
  /** "<hba kind>/<object name>" (e.g. "fileio/bf-pc01-lun0") -> object paths, first found first. */
  #objects = new Map<string, string[]>();
  /** Object path -> the TPG LUN directories linking to it; undefined until first needed. */
  #users?: Map<string, Set<string>>;
  /** TPG LUN directory -> the object path it links to. */
  #lunTarget = new Map<string, string>();

  constructor(fs: ConfigfsReader, root: string) {
    this.#fs = fs;
    this.#root = root;
  }

  get #core() {
    return join(this.#root, "core");
  }

  get #fabric() {
    return join(this.#root, "iscsi");
  }

  /** Two listings; rebuilds what they show has changed behind the applier's back. */
  async sync(): Promise<void> {
    const core = await names(this.#fs, this.#core);
    if (!this.#coreNames || !sameNames(this.#coreNames, core)) {
      await this.#buildObjects(core);
      this.#users = undefined;
    }
    const fabric = await names(this.#fs, this.#fabric);
    if (!this.#fabricNames || !sameNames(this.#fabricNames, fabric)) {
      this.#fabricNames = new Set(fabric);
      this.#users = undefined;
    }
  }

  invalidate(): void {
    this.#coreNames = undefined;
    this.#fabricNames = undefined;
    this.#users = undefined;
  }

  async #buildObjects(core: string[]): Promise<void> {
    this.#coreNames = new Set(core);
    this.#objects = new Map();
    for (const hba of core) {
      if (!HBA.test(hba) || !(await this.#fs.isDir(join(this.#core, hba)))) continue;
      for (const n of await names(this.#fs, join(this.#core, hba)))
        if (await this.#fs.isDir(join(this.#core, hba, n)))
          this.#addObject(join(this.#core, hba, n));
    }
  }

  #key(so: string): string {
    const kind = HBA.exec(basename(dirname(so)))?.[1] ?? "";
    return `${kind}/${basename(so)}`;
  }

  #addObject(so: string): void {
    const k = this.#key(so);
    const list = this.#objects.get(k) ?? [];
    if (!list.includes(so)) list.push(so);
    this.#objects.set(k, list);
  }

  /** The object of that name in an HBA of that kind (`fileio`, `iblock`), if any. */
  findObject(hbaKind: string, name: string): string | undefined {
    return this.#objects.get(`${hbaKind}/${name}`)?.[0];
  }

  /** Like rtslib: one HBA per storage object, numbered with the lowest index free across all. */
  freeHbaIndex(): number {
    const used = new Set<number>();
    for (const n of this.#coreNames ?? []) {
      const m = HBA.exec(n);
      if (m) used.add(Number(m[2]));
    }
    let i = 0;
    while (used.has(i)) i++;
    return i;
  }

  hbaAdded(hba: string): void {
    this.#coreNames?.add(basename(hba));
  }

  objectAdded(so: string): void {
    this.#addObject(so);
  }

  /** After rmdir of an object, and of its HBA when that went too. */
  objectRemoved(so: string, hbaRemoved: boolean): void {
    const k = this.#key(so);
    const rest = (this.#objects.get(k) ?? []).filter((p) => p !== so);
    if (rest.length > 0) this.#objects.set(k, rest);
    else this.#objects.delete(k);
    this.#users?.delete(so);
    if (hbaRemoved) this.#coreNames?.delete(basename(dirname(so)));
  }

  targetAdded(iqn: string): void {
    this.#fabricNames?.add(iqn);
  }

  targetRemoved(iqn: string): void {
    this.#fabricNames?.delete(iqn);
    for (const lun of [...this.#lunTarget.keys()])
      if (lun.startsWith(join(this.#fabric, iqn, "/"))) this.lunUnlinked(lun);
  }

  /** The fabric folder itself was made: the kernel adds its own groups in it. */
  fabricAdded(): void {
    this.#fabricNames = undefined;
  }

  lunLinked(lunDir: string, so: string): void {
    if (!this.#users) return;
    this.lunUnlinked(lunDir);
    this.#lunTarget.set(lunDir, so);
    const set = this.#users.get(so) ?? new Set<string>();
    set.add(lunDir);
    this.#users.set(so, set);
  }

  lunUnlinked(lunDir: string): void {
    const so = this.#lunTarget.get(lunDir);
    if (so === undefined) return;
    this.#lunTarget.delete(lunDir);
    this.#users?.get(so)?.delete(lunDir);
  }

  /** Whether any target's TPG LUN still links to the object (configfs walked once, then kept). */
  async isExported(so: string): Promise<boolean> {
    if (!this.#users) await this.#buildUsers();
    return (this.#users?.get(so)?.size ?? 0) > 0;
  }

  async #buildUsers(): Promise<void> {
    this.#users = new Map();
    this.#lunTarget = new Map();
    for (const iqn of await names(this.#fs, this.#fabric)) {
      const target = join(this.#fabric, iqn);
      for (const tpg of await names(this.#fs, target)) {
        if (!tpg.startsWith("tpgt_")) continue;
        const lunsDir = join(target, tpg, "lun");
        for (const d of await names(this.#fs, lunsDir)) {
          const lunDir = join(lunsDir, d);
          if (!(await this.#fs.isDir(lunDir))) continue;
          for (const l of await names(this.#fs, lunDir)) {
            if (!(await this.#fs.isLink(join(lunDir, l)))) continue;
            // Read relative to the link's folder, whatever path made it: resolved, it
            // compares with the paths the applier builds.
            this.lunLinked(lunDir, resolve(lunDir, await this.#fs.readlink(join(lunDir, l))));
            break;
          }
        }
      }
    }
  }
}
