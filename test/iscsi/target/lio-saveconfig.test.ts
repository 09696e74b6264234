import { readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import {
  mergeTarget,
  removeTarget,
  type SaveConfig,
  serializeSaveConfig,
  updateSaveConfig,
} from "../../../src/iscsi/target/lio-saveconfig.js";
import type { TargetSpec } from "../../../src/iscsi/target/types.js";

const foreign: SaveConfig = JSON.parse(
  readFileSync(join(import.meta.dirname, "../../fixtures/iscsi/saveconfig-foreign.json"), "utf8"),
);

/**
 * What rtslib-fb (2.1.75) restore() accepts, from its source: a storage object's keys other
 * than plugin/attributes/alua_tpgs/exists/buffered_mode are its class's constructor
 * parameters (tcm.py); a node ACL's keys other than node_wwn/attributes/mapped_luns are set
 * as properties, and only the chap_* ones (and tag) exist (target.py); a LUN names
 * "/backstores/<plugin>/<name>" of a storage object; a mapped LUN's tpg_lun a TPG LUN.
 * Returns the problems found.
 */
function rtslibProblems(c: SaveConfig): string[] {
  const p: string[] = [];
  const ctor: Record<string, string[]> = {
    fileio: ["name", "dev", "size", "wwn", "write_back", "aio", "index"],
    block: ["name", "dev", "wwn", "readonly", "write_back", "index"],
  };
  const objects = new Set<string>();
  for (const so of c.storage_objects ?? []) {
    if (typeof so.name !== "string" || /[/\s]/.test(so.name)) p.push(`bad name ${so.name}`);
    const allowed = ctor[so.plugin];
    if (!allowed) {
      p.push(`plugin ${so.plugin}`);
      continue;
    }
    for (const k of Object.keys(so)) {
      if (["plugin", "attributes", "alua_tpgs", "exists", "buffered_mode"].includes(k)) continue;
      if (!allowed.includes(k)) p.push(`${so.plugin}/${so.name}: ${k} is no constructor parameter`);
    }
    if (typeof so.dev !== "string") p.push(`${so.name}: no dev`);
    if (so.plugin === "fileio" && !Number.isInteger(so.size))
      p.push(`${so.name}: fileio needs size`);
    if (typeof so.wwn !== "string") p.push(`${so.name}: no wwn (a random one at every restore)`);
    objects.add(`/backstores/${so.plugin}/${so.name}`);
  }
  for (const tg of c.targets ?? []) {
    if (typeof tg.wwn !== "string") p.push("target without wwn");
    if (tg.fabric !== "iscsi") p.push(`${tg.wwn}: fabric ${tg.fabric}`);
    for (const tpg of tg.tpgs ?? []) {
      if (!Number.isInteger(tpg.tag)) p.push(`${tg.wwn}: tpg without tag`);
      const lunIdx = new Set<number>();
      for (const l of tpg.luns ?? []) {
        if (!Number.isInteger(l.index)) p.push(`${tg.wwn}: lun without index`);
        lunIdx.add(l.index);
        if (!objects.has(l.storage_object))
          p.push(`${tg.wwn}: lun ${l.index} -> missing ${l.storage_object}`);
      }
      for (const portal of (tpg.portals ?? []) as Record<string, unknown>[]) {
        if (typeof portal.ip_address !== "string" || !Number.isInteger(portal.port))
          p.push(`${tg.wwn}: portal needs ip_address and port`);
      }
      for (const acl of (tpg.node_acls ?? []) as Record<string, unknown>[]) {
        if (typeof acl.node_wwn !== "string") p.push(`${tg.wwn}: acl without node_wwn`);
        for (const k of Object.keys(acl)) {
          const known = [
            "node_wwn",
            "attributes",
            "mapped_luns",
            "tag",
            "chap_userid",
            "chap_password",
            "chap_mutual_userid",
            "chap_mutual_password",
          ];
          if (!known.includes(k)) p.push(`${tg.wwn}: acl key ${k} would be silently ignored`);
        }
        for (const m of (acl.mapped_luns ?? []) as Record<string, unknown>[]) {
          if (!Number.isInteger(m.index)) p.push(`${tg.wwn}: mapped lun without index`);
          if (!lunIdx.has(m.tpg_lun as number))
            p.push(`${tg.wwn}: mapped lun -> missing tpg_lun ${m.tpg_lun}`);
          if (typeof m.write_protect !== "boolean") p.push(`${tg.wwn}: write_protect not boolean`);
        }
      }
    }
  }
  return p;
}

function specA(): TargetSpec {
  return {
    iqn: "iqn.2026-11.lan.bootfleet:pc01",
    portal: { address: "10.99.0.1", port: 3260 },
    luns: [
      {
        lun: 0,
        path: "/var/lib/bootfleet/overlays/pc01.img",
        kind: "file",
        readOnly: false,
        sizeBytes: 32 * 2 ** 30,
        wwn: "0b6f7c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d",
      },
      {
        lun: 1,
        path: "/dev/vg0/games",
        kind: "block",
        readOnly: true,
        sizeBytes: 2 ** 30,
        wwn: "games-0001",
      },
    ],
    acl: {
      initiatorIqn: "iqn.2010-04.org.ipxe:pc01",
      chapUser: "pc01",
      chapPassword: "pc01Secret.42",
      mutualUser: "bootfleet",
      mutualPassword: "srvSecret.43",
    },
  };
}

t.test("the checker itself catches what rtslib would skip", async (t) => {
  t.same(rtslibProblems(foreign), [], "the foreign fixture is valid");
  const bad = structuredClone(foreign);
  (bad.storage_objects?.[0] as Record<string, unknown>).size = 1;
  const badTpg = bad.targets?.[0]?.tpgs?.[0] ?? {};
  (badTpg.node_acls as Record<string, unknown>[])[0]!.chap_mutual_user = "x";
  bad.targets?.[0]?.tpgs?.[0]?.luns?.push({ index: 7, storage_object: "/backstores/fileio/nope" });
  const p = rtslibProblems(bad).join("\n");
  t.match(p, /block\/backup: size is no constructor parameter/);
  t.match(p, /chap_mutual_user would be silently ignored/);
  t.match(p, /missing \/backstores\/fileio\/nope/);
});

t.test("merging a target keeps every other target and storage object untouched", async (t) => {
  const merged = mergeTarget(foreign, specA());
  t.same(rtslibProblems(merged), [], "rtslib format: fields, required keys, references");
  t.same(merged.targets?.[0], foreign.targets?.[0], "foreign target as it was");
  t.same(
    merged.storage_objects?.slice(0, 2),
    foreign.storage_objects,
    "foreign objects as they were",
  );

  const mine = merged.targets?.find((x) => x.wwn === specA().iqn);
  const tpg = mine?.tpgs?.[0] as Record<string, unknown> | undefined;
  t.equal(mine?.fabric, "iscsi");
  t.match(tpg?.attributes, { authentication: 1, generate_node_acls: 0 }, "never demo mode");
  t.equal(tpg?.enable, true);
  t.same(tpg?.portals, [{ ip_address: "10.99.0.1", port: 3260, iser: false, offload: false }]);
  const acl = ((tpg?.node_acls ?? []) as Record<string, unknown>[])[0];
  t.match(acl, {
    node_wwn: "iqn.2010-04.org.ipxe:pc01",
    chap_userid: "pc01",
    chap_password: "pc01Secret.42",
    chap_mutual_userid: "bootfleet",
    chap_mutual_password: "srvSecret.43",
  });
  t.same(
    ((acl?.mapped_luns ?? []) as Record<string, unknown>[]).map((m) => [
      m.index,
      m.tpg_lun,
      m.write_protect,
    ]),
    [
      [0, 0, false],
      [1, 1, true],
    ],
    "the games disk is write-protected for the initiator",
  );
  const objs = merged.storage_objects?.slice(2) ?? [];
  t.match(objs[0], {
    plugin: "fileio",
    dev: "/var/lib/bootfleet/overlays/pc01.img",
    size: 32 * 2 ** 30,
    wwn: "0b6f7c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d",
  });
  t.match(objs[1], { plugin: "block", dev: "/dev/vg0/games", readonly: true, wwn: "games-0001" });
  t.notOk("size" in (objs[1] ?? {}), "no size on a block object");

  t.same(mergeTarget(merged, specA()), merged, "merging the same target again changes nothing");
  t.same(
    removeTarget(merged, specA().iqn),
    foreign,
    "removing it gives back exactly the file before",
  );
});

t.test("changing a target drops only the storage objects it no longer uses", async (t) => {
  const merged = mergeTarget(foreign, specA());
  const smaller = { ...specA(), luns: [specA().luns[0]!] };
  const after = mergeTarget(merged, smaller);
  t.same(rtslibProblems(after), []);
  t.same(
    after.storage_objects?.map((s) => `${s.plugin}/${s.name}`),
    ["block/backup", "fileio/tools", "fileio/bf-pc01-lun0"],
  );
  t.equal(after.targets?.length, 2, "still one target each");
});

t.test("a storage object of another target is never taken over", async (t) => {
  const clash = structuredClone(foreign);
  clash.storage_objects?.push({
    plugin: "fileio",
    name: "bf-pc01-lun0",
    dev: "/x",
    size: 512,
    wwn: "w",
  });
  clash.targets?.[0]?.tpgs?.[0]?.luns?.push({
    index: 2,
    storage_object: "/backstores/fileio/bf-pc01-lun0",
  });
  t.throws(() => mergeTarget(clash, specA()), /already used by another target/);
});

t.test("IPv6 portals are bracketed as rtslib expects", async (t) => {
  const s = { ...specA(), portal: { address: "fd00::1", port: 3260 } };
  const tpg = mergeTarget({}, s).targets?.[0]?.tpgs?.[0] as Record<string, unknown>;
  t.match(tpg.portals, [{ ip_address: "[fd00::1]" }]);
});

t.test(
  "the file is replaced atomically, 0600, and a file we cannot read is left alone",
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), `bf-iscsi-save-${process.pid}-`));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, "saveconfig.json");
    await writeFile(path, serializeSaveConfig(foreign), { mode: 0o644 });
    await updateSaveConfig(path, (c) => mergeTarget(c, specA()));
    t.equal((await stat(path)).mode & 0o777, 0o600);
    const back: SaveConfig = JSON.parse(await readFile(path, "utf8"));
    t.same(back, mergeTarget(foreign, specA()), "JSON round trip");
    t.same(await readdir(dir), ["saveconfig.json"], "no temp file left");

    const broken = '{"targets": [ {"chap_password": "leakMe.12345" ';
    await writeFile(path, broken);
    const err = await updateSaveConfig(path, (c) => c).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    t.match(err?.message, /not valid JSON/, "refused");
    t.notMatch(err?.message, /leakMe/, "the error quotes no part of the file");
    t.equal(await readFile(path, "utf8"), broken, "unreadable file untouched");

    await updateSaveConfig(join(dir, "new.json"), (c) => mergeTarget(c, specA()));
    const fresh: SaveConfig = JSON.parse(await readFile(join(dir, "new.json"), "utf8"));
    t.same(rtslibProblems(fresh), [], "a missing file starts empty");
    t.equal(fresh.targets?.length, 1);
  },
);
