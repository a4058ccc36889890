import { test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, sign } from "node:crypto";
import { McoIdentityError, verifiedReplyData } from "../../src/mcollective/identity.js";
import type { McoReply } from "../../src/mcollective/client.js";

const pair = () => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return { privateKey, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
};
const server = pair();
const other = pair();
const expected = {
  requestId: "r1",
  identity: "web-prod-1.example.test",
  agent: "puppet",
  action: "status",
};

/** A reply as the node-side agent signs it (mcollective/agent/puppet.rb after_processing_hook). */
function reply(
  statement: Record<string, unknown>,
  key = server.privateKey,
  outer: Partial<McoReply> = {},
): McoReply {
  const text = JSON.stringify(statement);
  return {
    sender: expected.identity,
    agent: "puppet",
    msgtime: 0,
    statuscode: 0,
    statusmsg: "OK",
    data: {
      applying: false,
      vsop_signed: text,
      vsop_signature: sign("sha256", Buffer.from(text), key).toString("base64"),
    },
    ...outer,
  };
}
const good = {
  requestid: "r1",
  identity: expected.identity,
  agent: "puppet",
  action: "status",
  statuscode: 0,
  statusmsg: "OK",
  data: { applying: false, status: "stopped" },
};

test("a statement signed by the server's own key yields the signed data", () => {
  assert.deepEqual(verifiedReplyData(reply(good), expected, server.publicPem), good.data);
});

test("everything else is refused with McoIdentityError", () => {
  const cases: [string, McoReply][] = [
    [
      "another server's key (shared broker, stolen key of A replying as B)",
      reply(good, other.privateKey),
    ],
    ["no signature at all (a stock agent)", { ...reply(good), data: { applying: false } }],
    ["a replay of an earlier request", reply({ ...good, requestid: "r0" })],
    ["signed for another server", reply({ ...good, identity: "db-prod-1.example.test" })],
    ["signed for another action", reply({ ...good, action: "last_run_summary" })],
    ["outer status differs from the signed one", reply(good, server.privateKey, { statuscode: 1 })],
    ["outer message differs", reply(good, server.privateKey, { statusmsg: "currently applying" })],
    ["data not an object", reply({ ...good, data: [1] })],
    [
      "statement altered after signing",
      (() => {
        const r = reply(good);
        r.data.vsop_signed = String(r.data.vsop_signed).replace("stopped", "applied");
        return r;
      })(),
    ],
    [
      "oversized statement",
      (() => {
        const r = reply(good);
        r.data.vsop_signed = "x".repeat(70_000);
        return r;
      })(),
    ],
  ];
  for (const [what, r] of cases)
    assert.throws(() => verifiedReplyData(r, expected, server.publicPem), McoIdentityError, what);
});
