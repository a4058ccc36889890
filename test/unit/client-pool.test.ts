import { test } from "node:test";
import assert from "node:assert/strict";
import { ClientPool } from "../../src/reconcile/clients/client-pool.js";

test("classes with the same settings share a client; a changed class moves; unused clients close", async () => {
  const closed: string[] = [];
  let made = 0;
  const pool = new ClientPool<string>(async (c) => void closed.push(c));
  const make = () => `client-${++made}`;
  const a = pool.get("gold", { url: "u", password: "p1" }, make);
  assert.equal(pool.get("silver", { url: "u", password: "p1" }, make), a, "shared");
  const b = pool.get("bronze", { url: "u", password: "p2" }, make);
  assert.notEqual(b, a, "another password, another client");
  assert.equal(pool.get("gold", { url: "u", password: "p1" }, make), a, "no churn between classes");
  assert.equal(pool.get("bronze", { url: "u", password: "p2" }, make), b);
  assert.deepEqual(closed, []);

  const c = pool.get("bronze", { url: "u", password: "p3" }, make);
  assert.notEqual(c, b);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(closed, [b], "bronze's old client had no other class");
  pool.get("gold", { url: "u", password: "p4" }, make);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(closed, [b], "silver still uses gold's old client");
  await pool.stop();
  assert.equal(closed.length, 4);
});
