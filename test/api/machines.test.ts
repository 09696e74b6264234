import t from "tap";
import { normaliseMac } from "../../src/api/validate.js";
import { addUser, call, makeApi, tokenFor } from "./helpers.js";

t.test("MAC addresses: every usual spelling normalised; multicast and zero refused", async (t) => {
  for (const s of ["00:11:22:AA:BB:CC", "00-11-22-aa-bb-cc", "0011.22aa.bbcc", "001122AABBCC"]) {
    t.equal(normaliseMac(s), "00:11:22:aa:bb:cc", s);
  }
  // bit 0 of the first octet set = group address (IEEE 802)
  for (const s of [
    "01:00:5e:00:00:01",
    "ff:ff:ff:ff:ff:ff",
    "00:00:00:00:00:00",
    "00:11:22:33:44",
    "00:11-22:33:44:55",
    "gg:11:22:33:44:55",
  ]) {
    t.equal(normaliseMac(s), undefined, s);
  }
});

t.test("50 parallel creations of the same name: one 201, 49 409", async (t) => {
  const api = makeApi(t);
  const token = await tokenFor(api, await addUser(api, "op", "operator"));
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      call(api, "POST", "/api/machines", {
        token,
        body: {
          name: "LAB-PC-99",
          mac_address: `02:00:00:00:00:${i.toString(16).padStart(2, "0")}`,
        },
      }),
    ),
  );
  const codes = results.map((r) => r.status);
  t.equal(codes.filter((c) => c === 201).length, 1);
  t.equal(codes.filter((c) => c === 409).length, 49);
  t.ok(results.filter((r) => r.status === 409).every((r) => r.json.error === "conflict_error"));
  t.equal(api.store.machines.count(), 1);
  const dupMac = await call(api, "POST", "/api/machines", {
    token,
    body: {
      name: "other",
      mac_address: results.find((r) => r.status === 201)!.json.mac_address.toUpperCase(),
    },
  });
  t.equal(dupMac.status, 409, "same MAC in another spelling");
  t.match(dupMac.json.detail, /MAC/);
  const caseName = await call(api, "POST", "/api/machines", {
    token,
    body: { name: "lab-pc-99", mac_address: "02:00:00:00:01:01" },
  });
  t.equal(caseName.status, 409, "names are unique regardless of case");
});

t.test(
  "clients see only their own machines; BMC credentials are write-only and never logged",
  async (t) => {
    const api = makeApi(t);
    const admin = await tokenFor(api, await addUser(api, "root", "admin"));
    const alice = await addUser(api, "alice", "client");
    const aliceToken = await tokenFor(api, alice);
    const secret = "Bmc-Secret-7781";
    const mine = await call(api, "POST", "/api/machines", {
      token: admin,
      body: {
        name: "alice-pc",
        mac_address: "52:54:00:00:00:01",
        owner_user_id: alice.id,
        bmc_address: "10.0.0.9",
        bmc_username: "ipmiadmin",
        bmc_password: secret,
        overlay_policy: "reset-on-reboot",
        boot_action: "sanboot",
      },
    });
    t.equal(mine.status, 201);
    t.equal(mine.json.overlay_policy, "reset-on-reboot");
    t.equal(mine.json.bmc_credentials_set, true);
    t.notMatch(mine.text, secret);
    t.notMatch(mine.text, "ipmiadmin");
    const theirs = await call(api, "POST", "/api/machines", {
      token: admin,
      body: { name: "bob-pc", mac_address: "52:54:00:00:00:02" },
    });
    const list = await call(api, "GET", "/api/machines", { token: aliceToken });
    t.same(
      list.json.map((m: { name: string }) => m.name),
      ["alice-pc"],
    );
    t.equal(list.headers.get("x-total-count"), "1");
    t.equal(
      (await call(api, "GET", `/api/machines/${theirs.json.id}`, { token: aliceToken })).status,
      404,
    );
    t.equal(
      (await call(api, "GET", `/api/machines/${mine.json.id}`, { token: aliceToken })).status,
      200,
    );
    t.equal(
      (
        await call(api, "PUT", `/api/machines/${mine.json.id}`, {
          token: aliceToken,
          body: { name: "x" },
        })
      ).status,
      403,
    );
    const upd = await call(api, "PUT", `/api/machines/${mine.json.id}`, {
      token: admin,
      body: { bmc_password: "Other-Secret-1", room: "R2" },
    });
    t.equal(upd.status, 200);
    t.equal(upd.json.room, "R2");
    const history = JSON.stringify(api.store.db.prepare("SELECT * FROM history_events").all());
    const logs = api.logLines.join("");
    for (const s of [secret, "Other-Secret-1"]) {
      t.notMatch(history, s, "not in history");
      t.notMatch(logs, s, "not in the log");
    }
    t.equal(
      (
        await call(api, "PUT", `/api/machines/${mine.json.id}`, {
          token: admin,
          body: { owner_user_id: 9999 },
        })
      ).json.field,
      "owner_user_id",
    );
  },
);

t.test("lists page, sort and search in SQL with the count headers", async (t) => {
  const api = makeApi(t);
  const token = await tokenFor(api, await addUser(api, "v", "viewer"));
  api.store.transaction(() => {
    for (let i = 0; i < 250; i++) {
      api.store.machines.create({
        name: `pc-${String(i).padStart(3, "0")}`,
        mac_address: `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`,
        room: i % 2 ? "odd" : "even",
      });
    }
  });
  const page = await call(api, "GET", "/api/machines?skip=100&limit=100&sort=name&order=desc", {
    token,
  });
  t.equal(page.headers.get("x-total-count"), "250");
  t.equal(page.headers.get("x-page-count"), "3");
  t.equal(page.json.length, 100);
  t.equal(page.json[0].name, "pc-149");
  const odd = await call(api, "GET", "/api/machines?room=odd&search=pc-1&limit=5", { token });
  t.equal(odd.headers.get("x-total-count"), "50", "pc-1xx in odd rooms");
  const like = await call(api, "GET", "/api/machines?search=%25", { token });
  t.equal(like.headers.get("x-total-count"), "0", "% is matched literally, not as a wildcard");
});
