// Hostile input on vsop's MCollective reply queue. Every server holds the broker login and sees
// the reply queue's name in each request, so any of them can publish there. Here the test plays
// such a server: it reads the operator's own requests (a queue bound next to the server's), then
// answers with a 16 MB message, garbage, a reply to no request, a small deeply nested body
// signed with the real server key, and a forged one. The operator must stay up, small and
// healthy, count each drop by reason, log none of the bytes, and leave the server's status be.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from "amqplib";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  metric,
  removeDNS,
  scrape,
  startOperator,
  waitFor,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { stackEnv } from "../support/env.js";
import { bootstrapURLIn, fetchBootstrap, readGuestinfo } from "../support/installer.js";
import { encodeReplyBody, encodeReplyEnvelope, loadRuby } from "../../src/mcollective/marshal.js";
import { signBody } from "../../src/mcollective/security.js";

const CLASS = "broker-input-guestinfo";
const LABELS = { "vsop-test": "broker-input" };
const HOST = "brkin-prod-1.example.test";
const DROPPED = "vsop_mcollective_replies_dropped_total";
/** Put in every hostile message: the operator's log must never contain it. */
const MARKER = `hostile-${randomBytes(6).toString("hex")}`;
const MiB = 1024 * 1024;

let ns: string;
let op: Operator;
let conn: ChannelModel;
let channel: ConfirmChannel;
/** The operator's requests to HOST, as the server would receive them, with when they came. */
const requests: { msg: ConsumeMessage; at: number }[] = [];

before(async () => {
  installVsop();
  ns = createNamespace("broker-input");
  applyClass(CLASS, { boot: { method: "guestinfo", installTimeout: "10m" } });
  addDNS("10.12.30.171", HOST);
  // Listen where HOST's mcollectived would, before the operator can ask anything.
  conn = await amqp.connect(stackEnv("VSOP_AMQP_URL"));
  channel = await conn.createConfirmChannel();
  const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
  await channel.bindQueue(queue, "mcollective_directed", HOST);
  await channel.consume(queue, (msg) => msg && requests.push({ msg, at: Date.now() }), {
    noAck: true,
  });
  op = startOperator("broker-input", [
    "--label-selector",
    "vsop-test=broker-input",
    "--resync-period",
    "3s",
  ]);
  apply(virtualServer(ns, "brkin", HOST, CLASS, LABELS));
  // The server fetches its keys (as its installer would) but never starts mcollectived: from
  // now on vsop asks HOST whether it is installed, and only the test answers.
  const url = await waitFor(
    "the bootstrap URL in guestinfo",
    () => {
      try {
        return bootstrapURLIn(readGuestinfo(HOST.split(".")[0]!).userData);
      } catch {
        return undefined;
      }
    },
    45_000,
  );
  await waitFor("the bootstrap to answer", async () => (await fetchBootstrap(url)).status === 200);
});

after(async () => {
  await conn?.close().catch(() => undefined);
  if (ns) await deleteServers(ns);
  assert.equal(await op?.stop(), 0, "the operator exits cleanly");
  removeDNS(HOST);
});

/** A reply envelope as mcollectived writes it, its body signed with the given key. */
function reply(requestid: string, body: Buffer, signingKey: string): Buffer {
  return encodeReplyEnvelope({
    senderid: HOST,
    requestid,
    senderagent: "puppet",
    msgtime: Math.floor(Date.now() / 1000),
    body,
    hash: signBody(body, signingKey),
  });
}

async function publish(queue: string, content: Buffer): Promise<void> {
  channel.sendToQueue(queue, content);
  await channel.waitForConfirms();
}

/** Peak and current resident memory of a process, from /proc. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024;
  return { rss: kib("VmRSS"), peak: kib("VmHWM") };
}

test("hostile replies are dropped and counted; vsop stays up, healthy and small", async (t) => {
  // A request still waiting for its answer (vsop waits 10 s; nobody else answers it).
  const request = await waitFor(
    "a fresh request from vsop to the server",
    () => requests.find((r) => r.at > Date.now() - 2000)?.msg,
    30_000,
  );
  const { requestid } = loadRuby(request.content) as { requestid: string };
  const replyQueue = request.properties.replyTo as string;
  assert.match(replyQueue, /^amq\.gen-/);
  const connected = op
    .logs()
    .split("\n")
    .filter((l) => l.includes("connected to the broker"))
    .at(-1);
  assert.ok(connected?.includes(replyQueue), "the request's replyTo is vsop's reply queue");
  const counts = async () => {
    const { body } = await scrape(op.metricsPort);
    const of = (reason: string) => metric(body, DROPPED, { reason });
    return {
      oversized: of("oversized"),
      malformed: of("malformed"),
      unknown_request: of("unknown_request"),
      bad_signature: of("bad_signature"),
    };
  };
  const start = await counts();
  const installedBefore = cond(getVS(ns, "brkin"), "Installed");
  const baseline = memory(op.proc.pid!).rss;
  // The log file is appended to across runs: look only at what this test caused.
  const logStart = op.logs().length;

  const serverKey = readFileSync(path.join(stackEnv("VSOP_MCO_DIR"), "server-private.pem"), "utf8");
  const intruderKey = generateKeyPairSync("rsa", { modulusLength: 2048 })
    .privateKey.export({ type: "pkcs8", format: "pem" })
    .toString();
  const pong = encodeReplyBody({
    statuscode: 0,
    statusmsg: "OK",
    data: { applying: false, enabled: true, status: "idling", note: MARKER },
  });
  // 20 KB: 10,000 nested arrays, with the marker in the innermost.
  const deep = Buffer.concat([
    Buffer.from([4, 8]),
    Buffer.from("[\x06".repeat(10_000)),
    Buffer.from(`"${String.fromCharCode(MARKER.length + 5)}${MARKER}`, "latin1"),
  ]);
  // The request is still waiting (no server answers): these two reach the signature check.
  await publish(replyQueue, reply(requestid, deep, serverKey));
  await publish(replyQueue, reply(requestid, pong, intruderKey));
  await publish(replyQueue, reply(randomBytes(16).toString("hex"), pong, serverKey));
  await publish(replyQueue, Buffer.from(`garbage ${MARKER}`));
  // A well-formed, validly signed reply carrying 16 MB: the size cap alone must stop it.
  const bulk = Buffer.alloc(16_000_000, 0x41);
  bulk.write(MARKER, 100);
  const huge = reply(requestid, bulk, serverKey);
  await publish(replyQueue, huge);

  // Counted by reason: the deep body and the garbage are both malformed.
  await waitFor(
    "every hostile message counted",
    async () => {
      const c = await counts();
      return (
        c.oversized >= start.oversized + 1 &&
        c.malformed >= start.malformed + 2 &&
        c.unknown_request >= start.unknown_request + 1 &&
        c.bad_signature >= start.bad_signature + 1
      );
    },
    20_000,
  );

  assert.equal(op.proc.exitCode, null, "the operator is still running");
  assert.equal(op.proc.signalCode, null);
  assert.equal((await scrape(op.healthPort, "/healthz")).status, 200);
  const { rss, peak } = memory(op.proc.pid!);
  const mib = (n: number) => `${Math.round(n / MiB)} MiB`;
  t.diagnostic(`operator RSS ${mib(baseline)} before, ${mib(rss)} after, peak ${mib(peak)}`);
  assert.ok(peak < 384 * MiB, `peak RSS ${mib(peak)} (the pod's limit is 512 MiB)`);
  assert.ok(rss < 384 * MiB, `RSS ${mib(rss)}`);

  // Nothing of the messages reached the log; the drops are there with reason and size only.
  const logs = op.logs().slice(logStart);
  assert.ok(!logs.includes(MARKER), "no message bytes in the operator log");
  const drops = logs
    .split("\n")
    .filter((l) => l.includes("dropped a reply"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const oversized = drops.find((d) => d.reason === "oversized");
  assert.equal(oversized?.bytes, huge.length);
  const forged = drops.find((d) => d.reason === "bad_signature");
  assert.equal(forged?.requestId, requestid);
  assert.equal(forged?.sender, HOST);

  // Nothing the test sent made the server count as installed.
  const installed = cond(getVS(ns, "brkin"), "Installed");
  assert.notEqual(installed?.status, "True");
  assert.equal(installed?.status, installedBefore?.status);
});
