// Puppet through MCollective over AMQP: vsop's client against real mcollectived nodes (started
// with hack/node-up.sh) running the project's puppet agent plugin and `puppet apply`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import { McoClient, type McoClientOptions } from "../../src/mcollective/client.js";
import { McoConnectionError, McoTimeout } from "../../src/mcollective/errors.js";
import {
  PuppetBusyError,
  PuppetClient,
  type LastRunSummary,
} from "../../src/mcollective/puppet.js";
import { stackEnv } from "../support/env.js";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const WEB = "web-prod-1.example.test";
const DB = "db-prod-1.example.test";
const BROKEN = "broken-prod-1.example.test";
const NODES: [string, string][] = [
  [WEB, "web.pp"],
  [DB, "db.pp"],
  [BROKEN, "failing.pp"],
];

const mcoDir = () => stackEnv("VSOP_MCO_DIR");
const nodeDir = (fqdn: string) => join(stackEnv("VSOP_STACK_DIR"), "nodes", fqdn);
const nodeLog = (fqdn: string) => join(stackEnv("VSOP_STACK_DIR"), "logs", `mco-${fqdn}.log`);
const nodeUp = (fqdn: string, manifest: string) =>
  run(join(ROOT, "hack/node-up.sh"), [fqdn, manifest], { timeout: 90_000 });
const nodeDown = (fqdn: string) =>
  run(join(ROOT, "hack/node-down.sh"), [fqdn], { timeout: 30_000 });

function freshKeys() {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/** A client with the stack's keys, overrides applied; its log lines are kept for assertions. */
function newClient(overrides: Partial<McoClientOptions> = {}) {
  const logLines: string[] = [];
  const outcomes: string[] = [];
  const client = new McoClient({
    url: stackEnv("VSOP_AMQP_URL"),
    clientPrivateKeyPem: readFileSync(join(mcoDir(), "vsop-private.pem"), "utf8"),
    clientCertName: "vsop",
    serverPublicKeyPem: readFileSync(join(mcoDir(), "server-public.pem"), "utf8"),
    logger: pino({ level: "debug" }, { write: (line: string) => void logLines.push(line) }),
    onRequest: (agent, action, outcome) => outcomes.push(`${agent}#${action}:${outcome}`),
    ...overrides,
  });
  return { client, logLines, outcomes };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls last_run_summary until a run that finished after `after` (epoch seconds) shows up. */
async function waitForRun(
  puppet: PuppetClient,
  fqdn: string,
  previous: number,
  initiatedAt: number,
): Promise<LastRunSummary> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const summary = await puppet.lastRunSummary(fqdn);
    if (summary.lastrun > previous && summary.lastrun >= initiatedAt) return summary;
    if (Date.now() > deadline) assert.fail(`no new Puppet run on ${fqdn} within 90s`);
    await sleep(500);
  }
}

async function waitForLog(fqdn: string, pattern: RegExp): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const line = readFileSync(nodeLog(fqdn), "utf8")
      .split("\n")
      .find((l) => pattern.test(l));
    if (line) return line;
    if (Date.now() > deadline) assert.fail(`${nodeLog(fqdn)} never matched ${pattern}`);
    await sleep(250);
  }
}

let mco: McoClient;
let puppet: PuppetClient;

before(async () => {
  // Fresh nodes: node-up keeps a running node as it is, so stop leftovers first.
  await Promise.all(NODES.map(([fqdn]) => nodeDown(fqdn)));
  await Promise.all(NODES.map(([fqdn, manifest]) => nodeUp(fqdn, manifest)));
  mco = newClient().client;
  await mco.connect();
  puppet = new PuppetClient(mco, { timeoutMs: 10_000 });
});

after(async () => {
  await mco?.close();
  await Promise.all(NODES.map(([fqdn]) => nodeDown(fqdn)));
});

test("vsop's client pings both nodes (directed) and finds them in a broadcast", async () => {
  assert.deepEqual(await mco.discover([WEB, DB], 5000), [DB, WEB]);
  const everyone = await mco.discover(undefined, 3000);
  for (const fqdn of [WEB, DB, BROKEN]) assert.ok(everyone.includes(fqdn), fqdn);
});

test("runonce applies each node's manifest; last_run_summary reports the run", async () => {
  const expectedFile: Record<string, string> = { [WEB]: "www/index.html", [DB]: "db.conf" };
  await Promise.all(
    [WEB, DB].map(async (fqdn) => {
      const before = await puppet.lastRunSummary(fqdn);
      const started = await puppet.runonce(fqdn);
      assert.match(started.summary, /Started a Puppet run/);
      assert.ok(started.initiatedAt > 0);
      const summary = await waitForRun(puppet, fqdn, before.lastrun, started.initiatedAt);
      assert.ok(summary.changedResources > 0, `${fqdn} changed ${summary.changedResources}`);
      assert.equal(summary.failedResources, 0);
      assert.ok(summary.totalResources >= summary.changedResources);
      assert.ok(summary.configVersion);
      assert.ok(existsSync(join(nodeDir(fqdn), expectedFile[fqdn])), expectedFile[fqdn]);
    }),
  );
  // Each node has its own state: web's file is not on db and the other way round.
  assert.ok(!existsSync(join(nodeDir(DB), "www/index.html")));
  assert.ok(!existsSync(join(nodeDir(WEB), "db.conf")));
  // Puppet writes the summary a moment before its run lock goes away: wait for idle.
  let status = await puppet.status(WEB);
  for (let i = 0; i < 40 && status.applying; i++) {
    await new Promise((r) => setTimeout(r, 250));
    status = await puppet.status(WEB);
  }
  assert.equal(status.applying, false);
  assert.equal(status.enabled, true);
  assert.ok(status.lastrun > 0);
});

test("the stock mco client reads the same last_run_summary figures", async () => {
  const ours = await puppet.lastRunSummary(WEB);
  const mcoRun = run(
    "mco",
    [
      "rpc",
      "puppet",
      "last_run_summary",
      "-I",
      WEB,
      "--config",
      stackEnv("VSOP_MCO_CLIENT_CONFIG"),
      "-j",
    ],
    { timeout: 60_000 },
  );
  // mco rpc reads node names from a stdin that is not a terminal unless it is at EOF.
  mcoRun.child.stdin?.end();
  const { stdout } = await mcoRun;
  const replies = JSON.parse(stdout) as {
    sender: string;
    statuscode: number;
    data: Record<string, unknown>;
  }[];
  assert.equal(replies.length, 1);
  const [reply] = replies;
  assert.equal(reply.sender, WEB);
  assert.equal(reply.statuscode, 0);
  assert.equal(reply.data.changed_resources, ours.changedResources);
  assert.equal(reply.data.failed_resources, ours.failedResources);
  assert.equal(reply.data.out_of_sync_resources, ours.outOfSyncResources);
  assert.equal(reply.data.total_resources, ours.totalResources);
  assert.equal(reply.data.lastrun, ours.lastrun);
  assert.equal(String(reply.data.config_version), ours.configVersion);
});

test("a manifest with a failing resource reports failed_resources > 0", async () => {
  const before = await puppet.lastRunSummary(BROKEN);
  const started = await puppet.runonce(BROKEN);
  const summary = await waitForRun(puppet, BROKEN, before.lastrun, started.initiatedAt);
  assert.ok(summary.failedResources > 0, `failed ${summary.failedResources}`);
});

test("runonce while a run is in progress is refused", async () => {
  const before = await puppet.lastRunSummary(DB);
  const started = await puppet.runonce(DB);
  const status = await puppet.status(DB);
  assert.equal(status.applying, true);
  assert.equal(status.status, "applying");
  await assert.rejects(puppet.runonce(DB), (err: unknown) => {
    assert.ok(err instanceof PuppetBusyError, String(err));
    assert.equal(err.statuscode, 1);
    assert.match(err.statusmsg, /currently applying/);
    return true;
  });
  await waitForRun(puppet, DB, before.lastrun, started.initiatedAt);
});

test("mcollectived rejects a request signed with a key it does not know", async () => {
  const intruder = freshKeys();
  // An unknown client name: the server has no public key for it.
  const unknown = newClient({
    clientPrivateKeyPem: intruder.privatePem,
    clientCertName: "intruder",
  });
  // A known name (vsop) with the wrong private key: the signature does not verify.
  const forged = newClient({ clientPrivateKeyPem: intruder.privatePem });
  try {
    for (const { client } of [unknown, forged]) {
      await assert.rejects(
        client.request({ agent: "puppet", action: "status", identity: WEB, timeoutMs: 3000 }),
        (err: unknown) => err instanceof McoTimeout && err.missing.includes(WEB),
      );
    }
    await waitForLog(WEB, /Could not find a public key for intruder/);
    await waitForLog(WEB, /Received an invalid signature in message/);
  } finally {
    await unknown.client.close();
    await forged.client.close();
  }
});

test("replies whose signature does not verify are dropped, logged and counted", async () => {
  const wrongServerKey = freshKeys().publicPem;
  const { client, logLines, outcomes } = newClient({ serverPublicKeyPem: wrongServerKey });
  try {
    await assert.rejects(
      client.request({ agent: "rpcutil", action: "ping", identity: [WEB, DB], timeoutMs: 3000 }),
      McoTimeout,
    );
    assert.equal(client.droppedReplies, 2);
    assert.deepEqual(outcomes, ["rpcutil#ping:timeout"]);
    const dropped = logLines.filter((l) => l.includes("dropped a reply"));
    assert.equal(dropped.length, 2);
    assert.match(dropped[0], /signature does not verify/);
    for (const line of logLines) {
      assert.ok(!line.includes("PRIVATE KEY"), "no key material in logs");
      assert.ok(!line.includes("guest:guest"), "no broker password in logs");
    }
  } finally {
    await client.close();
  }
  assert.equal(mco.droppedReplies, 0, "the right key drops nothing");
});

test("a dropped broker connection fails the requests in flight, then the client reconnects", async () => {
  const name = `vsop-e2e-reconnect-${process.pid}`;
  const { client, outcomes } = newClient({ connectionName: name, reconnectInitialDelayMs: 100 });
  try {
    await client.connect();
    // Waits for a node that does not exist, so it is still in flight when the connection drops.
    const inFlight = assert.rejects(
      client.request({
        agent: "rpcutil",
        action: "ping",
        identity: "absent.example.test",
        timeoutMs: 20_000,
      }),
      McoConnectionError,
    );
    const { stdout } = await run(
      "rabbitmqctl",
      ["list_connections", "-q", "--no-table-headers", "pid", "client_properties"],
      { timeout: 30_000 },
    );
    const pid = stdout
      .split("\n")
      .find((line) => line.includes(`"${name}"`))
      ?.split("\t")[0];
    assert.ok(pid, `connection ${name} not listed by rabbitmqctl`);
    await run("rabbitmqctl", ["close_connection", pid, "vsop e2e: reconnect test"], {
      timeout: 30_000,
    });
    await inFlight;
    assert.deepEqual(await client.discover(WEB, 10_000), [WEB]);
    assert.deepEqual(outcomes, ["rpcutil#ping:error", "rpcutil#ping:ok"]);
  } finally {
    await client.close();
  }
});

test("a collective whose exchanges are not declared is refused at connect", async () => {
  const { client } = newClient({ collective: "undeclared" });
  try {
    await assert.rejects(client.connect(), (err: unknown) => {
      assert.ok(err instanceof McoConnectionError, String(err));
      assert.match(err.message, /no exchange 'undeclared_broadcast'/);
      assert.ok(!err.message.includes("guest:guest"), "no password in the error");
      return true;
    });
  } finally {
    await client.close();
  }
});

test("a stopped node: the request times out and names the node missing", async () => {
  await nodeDown(DB);
  const quick = new PuppetClient(mco, { timeoutMs: 3000 });
  await assert.rejects(quick.status(DB), (err: unknown) => {
    assert.ok(err instanceof McoTimeout, String(err));
    assert.deepEqual(err.missing, [DB]);
    return true;
  });
  const partial = await mco.request({
    agent: "rpcutil",
    action: "ping",
    identity: [WEB, DB],
    timeoutMs: 3000,
  });
  assert.equal(partial.partial, true);
  assert.deepEqual(partial.missing, [DB]);
  assert.deepEqual(
    partial.replies.map((r) => r.sender),
    [WEB],
  );
});
