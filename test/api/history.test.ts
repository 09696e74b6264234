import t from "tap";
import { addUser, call, makeApi, tokenFor } from "./helpers.js";

t.test("every state-changing request is recorded, whatever its result; filters work", async (t) => {
  const api = makeApi(t);
  const op = await addUser(api, "op", "operator");
  const token = await tokenFor(api, op);
  const created = await call(api, "POST", "/api/machines", {
    token,
    body: { name: "h-1", mac_address: "02:aa:00:00:00:01" },
    headers: { "x-request-id": "req-create-1" },
  });
  await call(api, "POST", "/api/machines", {
    token,
    body: { name: "h-1", mac_address: "02:aa:00:00:00:02" },
  });
  await call(api, "DELETE", `/api/machines/${created.json.id}`, { token });
  await call(api, "POST", "/api/users", { token, body: {} }); // 403 for an operator: recorded too
  await call(api, "GET", "/api/machines", { token }); // reads are not recorded

  const all = await call(api, "GET", "/api/history?sort=id&order=asc", { token });
  t.equal(all.status, 200);
  t.equal(all.json.total, 4);
  const [c1, c2, del, forbidden] = all.json.operations;
  t.match(c1, {
    resource_type: "machine",
    operation: "create",
    status: "success",
    request_id: "req-create-1",
    user: "op",
    user_id: op.id,
    resource_id: String(created.json.id),
  });
  t.type(c1.duration_ms, "number");
  t.match(c2, { operation: "create", status: "failure", details: { http_status: 409 } });
  t.match(del, {
    operation: "delete",
    status: "success",
    machine_id: null,
    resource_id: String(created.json.id),
  });
  t.match(forbidden, { resource_type: "user", status: "failure", details: { http_status: 403 } });

  const failed = await call(api, "GET", "/api/history?status=failed&resource_type=machine", {
    token,
  });
  t.equal(failed.json.total, 1);
  t.equal(failed.headers.get("x-total-count"), "1");
  t.equal(
    (await call(api, "GET", `/api/history?user_id=${op.id}&operation=delete`, { token })).json
      .total,
    1,
  );
  const future = new Date(api.now.ms + 3600_000).toISOString();
  t.equal((await call(api, "GET", `/api/history?since=${future}`, { token })).json.total, 0);
  t.equal(
    (await call(api, "GET", "/api/history?limit=2&offset=3", { token })).json.operations.length,
    1,
  );
  t.equal((await call(api, "GET", "/api/history?since=yesterday", { token })).json.field, "since");
});
