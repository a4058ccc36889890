// McoClient's reply path without a broker: every hostile message is dropped through one place,
// counted by reason, logged without its bytes, and never stops the real replies from arriving.
import { test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { McoClient, type McoDropReason, type McoResult } from "../../src/mcollective/client.js";
import { encodeReplyBody, encodeReplyEnvelope, loadRuby } from "../../src/mcollective/marshal.js";
import { signBody } from "../../src/mcollective/security.js";
import { createLogger } from "../../src/observability/logger.js";

const MARKER = "MESSAGE-BYTES-MARKER";

function keyPair() {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 1024 });
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

const client = keyPair();
const server = keyPair();
const intruder = keyPair();

/** A reply as mcollectived sends it, signed with the given key (the servers' by default). */
function reply(
  requestid: string,
  senderid: string,
  opts: { key?: string; body?: Buffer } = {},
): Buffer {
  const body =
    opts.body ??
    encodeReplyBody({ statuscode: 0, statusmsg: "OK", data: { pong: 1, note: MARKER } });
  return encodeReplyEnvelope({
    senderid,
    requestid,
    senderagent: "rpcutil",
    msgtime: 1_700_000_000,
    body,
    hash: signBody(body, opts.key ?? server.privatePem),
  });
}

/** A client whose session is a stand-in channel: publish is recorded, delivery is ours to call. */
function harness() {
  const lines: string[] = [];
  const drops: McoDropReason[] = [];
  const published: Buffer[] = [];
  const mco = new McoClient({
    url: "amqp://127.0.0.1:1",
    clientPrivateKeyPem: client.privatePem,
    clientCertName: "vsop",
    serverPublicKeyPem: server.publicPem,
    logger: createLogger("debug", "json", { write: (line: string) => void lines.push(line) }),
    onDrop: (reason) => drops.push(reason),
    maxReplyBytes: 8192,
  });
  const inner = mco as unknown as {
    session: unknown;
    onDelivery(msg: { content: Buffer }): void;
  };
  inner.session = {
    conn: { close: () => Promise.resolve() },
    channel: { publish: (_x: string, _k: string, payload: Buffer) => published.push(payload) },
    replyQueue: "amq.gen-test",
  };
  const deliver = (content: Buffer) => inner.onDelivery({ content });
  return { mco, lines, drops, published, deliver };
}

test("hostile replies are dropped by reason; the real ones still complete the request", async () => {
  const { mco, lines, drops, published, deliver } = harness();
  const result: Promise<McoResult> = mco.request({
    agent: "rpcutil",
    action: "ping",
    identity: ["a.example.test", "b.example.test"],
    timeoutMs: 5000,
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(published.length, 2);
  const { requestid } = loadRuby(published[0]!) as { requestid: string };
  const deepBody = Buffer.concat([Buffer.from([4, 8]), Buffer.from("[\x06".repeat(40) + "0")]);

  deliver(Buffer.concat([Buffer.alloc(9000, 0x41), Buffer.from(MARKER)]));
  deliver(Buffer.from(`not marshal ${MARKER}`));
  deliver(reply("f".repeat(32), "x".repeat(1000)));
  deliver(reply(requestid, "a.example.test", { key: intruder.privatePem }));
  deliver(reply(requestid, "a.example.test"));
  deliver(reply(requestid, "a.example.test"));
  deliver(reply(requestid, "b.example.test", { body: deepBody }));
  deliver(reply(requestid, "b.example.test"));

  const { replies, partial } = await result;
  assert.equal(partial, false);
  assert.deepEqual(replies.map((r) => [r.sender, r.data.pong]).sort(), [
    ["a.example.test", 1],
    ["b.example.test", 1],
  ]);
  assert.deepEqual(drops, [
    "oversized",
    "malformed",
    "unknown_request",
    "bad_signature",
    "duplicate",
    "malformed",
  ]);
  assert.equal(mco.droppedReplies, 6);

  const dropped = lines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => String(l.msg).startsWith("dropped a reply"));
  assert.deepEqual(
    dropped.map((l) => l.reason),
    drops,
  );
  assert.equal(dropped[0]!.bytes, 9000 + MARKER.length);
  assert.equal((dropped[2]!.sender as string).length, 255, "sender truncated");
  assert.equal(dropped[2]!.level, 20, "a late reply is routine: debug");
  assert.equal(dropped[3]!.level, 40);
  assert.match(String(dropped[5]!.detail), /nested deeper than 32/);
  for (const line of lines) assert.ok(!line.includes(MARKER), `message bytes logged: ${line}`);
  await mco.close();
});

test("a reply after the request finished is unknown, not fatal", async () => {
  const { mco, drops, published, deliver } = harness();
  const result = mco.request({
    agent: "rpcutil",
    action: "ping",
    identity: "a.example.test",
    timeoutMs: 5000,
  });
  await new Promise((resolve) => setImmediate(resolve));
  const { requestid } = loadRuby(published[0]!) as { requestid: string };
  deliver(reply(requestid, "a.example.test"));
  assert.equal((await result).replies.length, 1);
  // Replayed once the request is over: nothing waits for it any more.
  deliver(reply(requestid, "a.example.test"));
  assert.deepEqual(drops, ["unknown_request"]);
  await mco.close();
});

test("a directed request keeps no reply from a server it was not sent to", async () => {
  const { mco, drops, lines, published, deliver } = harness();
  const result = mco.request({
    agent: "rpcutil",
    action: "ping",
    identity: "a.example.test",
    timeoutMs: 300,
  });
  await new Promise((resolve) => setImmediate(resolve));
  const { requestid } = loadRuby(published[0]!) as { requestid: string };
  // Validly signed with the shared server key, but about another server: before, each such
  // sender grew the request's reply map and turned a timeout into a "partial" answer.
  for (let i = 0; i < 3; i++) deliver(reply(requestid, `other-${i}.example.test`));
  await assert.rejects(result, { name: "McoTimeout" }, "nobody asked answered: a timeout");
  assert.deepEqual(drops, ["unexpected_sender", "unexpected_sender", "unexpected_sender"]);
  const line = JSON.parse(lines.find((l) => l.includes("unexpected_sender"))!) as {
    sender: string;
    level: number;
  };
  assert.equal(line.sender, "other-0.example.test");
  assert.equal(line.level, 40);

  // A broadcast names nobody, so any server may answer it.
  const any = mco.request({ agent: "rpcutil", action: "ping", expectedReplies: 1, timeoutMs: 300 });
  await new Promise((resolve) => setImmediate(resolve));
  const broadcast = loadRuby(published[1]!) as { requestid: string };
  deliver(reply(broadcast.requestid, "other-0.example.test"));
  assert.deepEqual(
    (await any).replies.map((r) => r.sender),
    ["other-0.example.test"],
  );
  assert.equal(drops.length, 3);
  await mco.close();
});

test("maxReplyBytes must be a positive whole number", () => {
  const base = {
    url: "amqp://127.0.0.1:1",
    clientPrivateKeyPem: client.privatePem,
    clientCertName: "vsop",
    serverPublicKeyPem: server.publicPem,
    logger: createLogger("silent"),
  };
  assert.throws(() => new McoClient({ ...base, maxReplyBytes: 0 }), /maxReplyBytes/);
  assert.throws(() => new McoClient({ ...base, maxReplyBytes: 1.5 }), /maxReplyBytes/);
});

test("a broker that accepts TCP and never speaks AMQP fails the connect at its deadline", async (t) => {
  const { createServer } = await import("node:net");
  const silent = createServer(() => undefined); // accepts, says nothing
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  t.after(() => silent.close());
  const { port } = silent.address() as { port: number };
  const mco = new McoClient({
    url: `amqp://127.0.0.1:${port}`,
    clientPrivateKeyPem: client.privatePem,
    clientCertName: "vsop",
    serverPublicKeyPem: server.publicPem,
    logger: createLogger("silent"),
    connectTimeoutMs: 500,
  });
  const started = Date.now();
  await assert.rejects(mco.connect(), /ETIMEDOUT/);
  assert.ok(Date.now() - started < 3000, `gave up after ${Date.now() - started} ms`);
  await mco.close();
});
