// TLS to the broker (hack/broker-tls.sh): vsop's MCollective client over amqps verified against the
// stack's broker CA reaches a real mcollectived that itself talks STOMP over TLS; a CA that did
// not sign the broker's certificate is refused with McoTLSError, naming spec.mcollective.caBundle
// and never the broker password.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { pino } from "pino";
import { McoClient, type McoClientOptions } from "../../src/mcollective/client.js";
import { McoTLSError } from "../../src/mcollective/errors.js";
import { stackEnv } from "../support/env.js";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  events,
  installVsop,
  nodeDown,
  nodeUp,
  OPERATOR_NS,
  removeDNS,
  startOperator,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";

const NODE = "tls-prod-1.example.test";
const BAD = "tlsbad-prod-1.example.test";
const BAD_CLASS = "broker-tls-wrong-ca";
const BAD_SECRET = "mco-broker-tls-test";
const BAD_PASSWORD = "tls-test-password-7f3a91";
const mcoDir = () => stackEnv("VSOP_MCO_DIR");
const stackCA = () => readFileSync(stackEnv("VSOP_BROKER_CA"), "utf8");
let scratch: string;
let ns: string | undefined;
let op: Operator | undefined;

function newClient(overrides: Partial<McoClientOptions>) {
  return new McoClient({
    url: stackEnv("VSOP_AMQPS_URL"),
    caBundle: stackCA(),
    clientPrivateKeyPem: readFileSync(join(mcoDir(), "vsop-private.pem"), "utf8"),
    clientCertName: "vsop",
    serverPublicKeyPem: readFileSync(join(mcoDir(), "server-public.pem"), "utf8"),
    logger: pino({ level: "silent" }),
    reconnectInitialDelayMs: 100,
    ...overrides,
  });
}

/** A CA of its own, unrelated to the broker's (PEM). */
function unrelatedCA(): string {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=not-the-broker-ca",
    ].concat(["-keyout", join(scratch, "other.key"), "-out", join(scratch, "other.crt")]),
    { stdio: "ignore" },
  );
  return readFileSync(join(scratch, "other.crt"), "utf8");
}

before(() => {
  scratch = mkdtempSync(join(tmpdir(), "vsop-broker-tls-"));
  nodeUp(NODE);
});

after(async () => {
  if (ns) await deleteServers(ns);
  if (op) assert.equal(await op.stop(), 0);
  removeDNS(BAD);
  nodeDown(NODE);
  rmSync(scratch, { recursive: true, force: true });
});

test("vsop over amqps with the stack's broker CA pings a node", async () => {
  const url = new URL(stackEnv("VSOP_AMQPS_URL"));
  assert.equal(url.protocol, "amqps:");
  const client = newClient({});
  try {
    await client.connect();
    assert.deepEqual(await client.discover(NODE, 5000), [NODE]);
  } finally {
    await client.close();
  }
});

test("a CA that did not sign the broker's certificate is refused with a clear reason", async () => {
  const password = BAD_PASSWORD;
  const url = new URL(stackEnv("VSOP_AMQPS_URL"));
  url.username = "vsop-tls-test";
  url.password = password;
  const client = newClient({ url: url.toString(), caBundle: unrelatedCA() });
  try {
    const check = (err: unknown) => {
      assert.ok(err instanceof McoTLSError, `expected McoTLSError, got ${String(err)}`);
      assert.match(err.code, /SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
      assert.match(err.message, /spec\.mcollective\.caBundle/);
      assert.ok(!err.message.includes(password), err.message);
      assert.ok(!JSON.stringify(err).includes(password));
      return true;
    };
    await assert.rejects(client.connect(), check);
    // A request goes through the reconnect loop: it gets the TLS reason at once, not a timeout.
    const started = Date.now();
    await assert.rejects(client.discover(NODE, 20_000), check);
    assert.ok(Date.now() - started < 10_000, "the TLS failure was not retried until the deadline");
  } finally {
    await client.close();
  }
});

test("STOMP over TLS answers with the stack's certificate and the node uses it", async () => {
  const port = Number(stackEnv("VSOP_STOMP_TLS_PORT"));
  const authorized = await new Promise<boolean>((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: stackCA(), timeout: 10_000 }, () => {
      resolve(socket.authorized);
      socket.end();
    });
    socket.on("error", reject);
    socket.on("timeout", () => reject(new Error(`no TLS handshake on ${port} within 10s`)));
  });
  assert.equal(authorized, true);

  // The node's connector said where it connected (loglevel info): STOMP over TLS, that port.
  const log = readFileSync(join(stackEnv("VSOP_STACK_DIR"), "logs", `mco-${NODE}.log`), "utf8");
  assert.match(log, new RegExp(`Connected to stomp\\+ssl://[^@\\s]+@127\\.0\\.0\\.1:${port}`));
  assert.doesNotMatch(log, /Connected to stomp:\/\//);
  // And the broker sees STOMP connections over TLS.
  const rows = execFileSync("rabbitmqctl", ["-q", "list_stomp_connections", "ssl"], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.match(rows, /\btrue\b/, rows);
});

test("a class whose caBundle did not sign the broker's certificate: BrokerTLSError, Failed", async () => {
  installVsop();
  ns = createNamespace("broker-tls");
  addDNS("10.12.30.85", BAD);
  // A login of its own, so that its password can be looked for; TLS fails before it is used.
  apply({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: BAD_SECRET, namespace: OPERATOR_NS },
    stringData: { username: "vsop-tls-test", password: BAD_PASSWORD },
  });
  applyClass(BAD_CLASS, {
    boot: { method: "guestinfo", assumeInstalled: true },
    mcollective: { caBundle: unrelatedCA(), credentialsSecret: BAD_SECRET },
  });
  op = startOperator("broker-tls", ["--label-selector", "vsop-test=broker-tls"]);
  apply(virtualServer(ns, "tlsbad", BAD, BAD_CLASS, { "vsop-test": "broker-tls" }));
  const vs = await waitForCondition(
    ns,
    "tlsbad",
    "PuppetApplied",
    "False",
    "BrokerTLSError",
    120_000,
  );
  const c = cond(vs, "PuppetApplied")!;
  assert.match(c.message, /spec\.mcollective\.caBundle/);
  assert.match(c.message, /SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
  assert.equal(vs.status?.phase, "Failed");
  assert.equal(cond(vs, "Ready")?.reason, "BrokerTLSError");
  const everything = JSON.stringify(vs) + JSON.stringify(events(ns, "tlsbad")) + op.logs();
  assert.ok(!everything.includes(BAD_PASSWORD), "the broker password leaked");
});
