// MCollective wire format: Ruby Marshal, Base64.encode64 and the ssl plugin's signatures,
// checked against bytes Ruby itself produced (ruby -e 'puts Marshal.dump(...).unpack1("H*")').
import { test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { McoProtocolError } from "../../src/mcollective/errors.js";
import {
  decodeReplyBody,
  decodeReplyEnvelope,
  dumpRuby,
  encodeReplyBody,
  encodeReplyEnvelope,
  encodeRequest,
  encodeSecureBody,
  loadRuby,
  symbolHash,
  toPlain,
} from "../../src/mcollective/marshal.js";
import { decode64, encode64, signBody, verifyBody } from "../../src/mcollective/security.js";
import { redactUrl } from "../../src/mcollective/client.js";
import { parseMcoArgs } from "../../src/cli/mco.js";
import { UsageError } from "../../src/cli/run-flags.js";

const hex = (s: string) => Buffer.from(s, "hex");

function keyPair() {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 1024 });
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

test("marshal: a symbol-keyed hash dumps byte for byte as Ruby dumps it", () => {
  // Marshal.dump({:a=>"b", :c=>[1, nil, true, 1700000000]})
  const ruby = "04087b073a066149220662063a0645543a06635b09690630546c2b0700f15365";
  const ours = dumpRuby(symbolHash({ a: "b", c: [1, null, true, 1700000000] }));
  assert.equal(ours.toString("hex"), ruby);
  assert.deepEqual(loadRuby(hex(ruby)), { a: "b", c: [1, null, true, 1700000000] });
});

test("marshal: a reply Ruby dumped decodes, and its body stays the signed bytes", () => {
  // Marshal.dump({:senderid=>"web", :requestid=>"abc", :senderagent=>"puppet",
  //   :msgtime=>1700000000, :body=>Marshal.dump({:statuscode=>0, :statusmsg=>"OK",
  //   :data=>{:lastrun=>1700000000, :total_time=>1.5, :summary=>{"resources"=>{"changed"=>2}}}}),
  //   :hash=>["sig"].pack("m")})
  const ruby =
    "04087b0b3a0d73656e6465726964492208776562063a0645543a0e726571756573746964492208616263063b0654" +
    "3a1073656e6465726167656e7449220b707570706574063b06543a0c6d736774696d656c2b0700f153653a09626f" +
    "647922017d04087b083a0f737461747573636f646569003a0e7374617475736d73674922074f4b063a0645543a09" +
    "646174617b083a0c6c61737472756e6c2b0700f153653a0f746f74616c5f74696d656608312e353a0c73756d6d61" +
    "72797b0649220e7265736f7572636573063b07547b0649220c6368616e676564063b075469073a09686173684922" +
    "0a63326c6e0a063b0646";
  const env = decodeReplyEnvelope(hex(ruby));
  assert.equal(env.senderid, "web");
  assert.equal(env.requestid, "abc");
  assert.equal(env.senderagent, "puppet");
  assert.equal(env.msgtime, 1700000000);
  assert.equal(env.hash, "c2ln\n");
  assert.ok(env.body instanceof Uint8Array);
  assert.deepEqual(decodeReplyBody(env.body), {
    statuscode: 0,
    statusmsg: "OK",
    data: { lastrun: 1700000000, total_time: 1.5, summary: { resources: { changed: 2 } } },
  });
});

test("marshal: request round trip has the shape mcollectived expects", () => {
  const body = encodeSecureBody(
    { agent: "puppet", action: "runonce", caller: "cert=vsop", data: { noop: true, tags: "a,b" } },
    60,
    1700000000,
  );
  assert.deepEqual(loadRuby(body), {
    ssl_msg: {
      agent: "puppet",
      action: "runonce",
      caller: "cert=vsop",
      data: { process_results: true, noop: true, tags: "a,b" },
    },
    ssl_ttl: 60,
    ssl_msgtime: 1700000000,
  });
  const req = encodeRequest({
    body,
    senderid: "vsop-host",
    requestid: "0123456789abcdef0123456789abcdef",
    filter: { agent: ["puppet"], identity: ["web-prod-1.example.test"] },
    collective: "mcollective",
    agent: "puppet",
    callerid: "cert=vsop",
    ttl: 60,
    msgtime: 1700000000,
    hash: "c2ln\n",
  });
  const decoded = loadRuby(req) as Record<string, unknown>;
  assert.deepEqual(Object.keys(decoded), [
    "body",
    "senderid",
    "requestid",
    "filter",
    "collective",
    "agent",
    "callerid",
    "ttl",
    "msgtime",
    "hash",
  ]);
  assert.ok(decoded.body instanceof Uint8Array, ":body is a binary String");
  assert.deepEqual(Buffer.from(decoded.body), body);
  assert.deepEqual(decoded.filter, {
    fact: [],
    cf_class: [],
    agent: ["puppet"],
    identity: ["web-prod-1.example.test"],
    compound: [],
  });
  // Keys of :filter are Strings, everything else Symbols: ":filter" then "\"fact\"" on the wire.
  assert.ok(req.includes(Buffer.from('"\tfact')), "filter keys are Ruby Strings");
  assert.ok(req.includes(Buffer.from(":\x0dsenderid")), "envelope keys are Ruby Symbols");
});

test("marshal: reply round trip and garbage", () => {
  const body = encodeReplyBody({ statuscode: 1, statusmsg: "busy", data: { summary: "" } });
  const bytes = encodeReplyEnvelope({
    senderid: "db",
    requestid: "r1",
    senderagent: "puppet",
    msgtime: 5,
    body,
    hash: "x\n",
  });
  const env = decodeReplyEnvelope(bytes);
  assert.deepEqual(Buffer.from(env.body), body);
  assert.deepEqual(decodeReplyBody(env.body), {
    statuscode: 1,
    statusmsg: "busy",
    data: { summary: "" },
  });
  assert.throws(() => decodeReplyEnvelope(Buffer.from("not marshal")), McoProtocolError);
  assert.throws(() => decodeReplyEnvelope(dumpRuby([1, 2])), McoProtocolError);
  assert.throws(() => decodeReplyEnvelope(dumpRuby(symbolHash({ senderid: "x" }))), /:body/);
});

test("toPlain: binary strings, symbols and maps become JSON values", () => {
  assert.deepEqual(
    toPlain({ a: new Uint8Array([104, 105]), b: Symbol.for("ok"), c: new Map([["k", [1]]]) }),
    { a: "hi", b: "ok", c: { k: [1] } },
  );
});

test("encode64 is Ruby's Base64.encode64: 60 characters a line, newline at the end", () => {
  // Base64.encode64("\x00\xff" * 50)
  const ruby =
    "AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A\n" +
    "/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/AP8A/wD/\n" +
    "AP8A/wD/AP8A/w==\n";
  const bytes = Buffer.from("00ff".repeat(50), "hex");
  assert.equal(encode64(bytes), ruby);
  assert.equal(encode64(Buffer.alloc(45)), `${"A".repeat(60)}\n`);
  assert.equal(encode64(Buffer.alloc(0)), "");
  assert.deepEqual(decode64(ruby), bytes);
  assert.equal(decode64("not base64!"), undefined);
});

test("signatures: RSA-SHA1 over the body bytes, verified only with the matching key", () => {
  const client = keyPair();
  const other = keyPair();
  const body = encodeSecureBody(
    { agent: "rpcutil", action: "ping", caller: "cert=vsop", data: {} },
    60,
    1,
  );
  const hash = signBody(body, client.privatePem);
  assert.match(hash, /^([A-Za-z0-9+/=]{1,60}\n)+$/);
  assert.equal(verifyBody(body, hash, client.publicPem), true);
  assert.equal(verifyBody(body, hash, other.publicPem), false, "someone else's key");
  const tampered = Buffer.from(body);
  tampered[tampered.length - 1] ^= 1;
  assert.equal(verifyBody(tampered, hash, client.publicPem), false, "changed body");
  const broken = (hash[0] === "A" ? "B" : "A") + hash.slice(1);
  assert.equal(verifyBody(body, broken, client.publicPem), false, "changed signature");
  assert.equal(verifyBody(body, "", client.publicPem), false, "no signature");
  assert.equal(verifyBody(body, "@@@", client.publicPem), false, "not base64");
});

test("redactUrl keeps the password out of logs", () => {
  assert.equal(redactUrl("amqp://guest:s3cret@broker:5672/"), "amqp://guest:***@broker:5672/");
  assert.equal(redactUrl("amqp://broker/"), "amqp://broker/");
});

test("vsop mco: defaults from VSOP_AMQP_URL and VSOP_MCO_DIR, and usage errors", () => {
  const env = { VSOP_AMQP_URL: "amqp://b/", VSOP_MCO_DIR: "/k" };
  const { command, connection } = parseMcoArgs(
    ["puppet", "runonce", "web.example.test", "--noop", "--tags", "a,b"],
    env,
  );
  assert.deepEqual(command, {
    kind: "runonce",
    identity: "web.example.test",
    environment: undefined,
    noop: true,
    tags: ["a", "b"],
  });
  assert.deepEqual(connection, {
    url: "amqp://b/",
    caFile: undefined,
    clientKeyFile: "/k/vsop-private.pem",
    clientCertName: "vsop",
    serverPublicKeyFile: "/k/server-public.pem",
    collective: "mcollective",
    timeoutMs: 10000,
  });
  assert.deepEqual(parseMcoArgs(["ping", "--identity", "x", "--timeout", "2s"], env).command, {
    kind: "ping",
    identity: "x",
  });
  assert.equal(parseMcoArgs(["puppet", "last-run", "x"], env).command.kind, "last-run");
  assert.equal(parseMcoArgs([], env).command.kind, "help");
  assert.throws(() => parseMcoArgs(["ping"], {}), /--url is required/);
  assert.throws(() => parseMcoArgs(["puppet", "status"], env), UsageError);
  assert.throws(() => parseMcoArgs(["puppet", "status", "x", "--noop"], env), UsageError);
  assert.throws(() => parseMcoArgs(["puppet", "reboot", "x"], env), UsageError);
  assert.throws(() => parseMcoArgs(["ping", "--bogus"], env), UsageError);
});
