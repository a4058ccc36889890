import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import axios from "axios";
import { createLogger } from "../../src/observability/logger.js";
import { scrub, serializeError } from "../../src/observability/redact.js";
import { KubeUnreachable } from "../../src/controller/kube.js";

const JWT =
  "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dnNvcCJ9.c2lnbmF0dXJlLWJ5dGVz";
const PEM =
  "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAsecretkeymaterial\n-----END RSA PRIVATE KEY-----";

/** A logger whose lines land in an array. */
function capture() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString("utf8"));
      cb();
    },
  });
  return { log: createLogger("debug", "json", sink), lines };
}

/** An error shaped like the one axios throws when the API server is down, token and all. */
async function realAxiosError(): Promise<unknown> {
  try {
    await axios.get("http://127.0.0.1:1/apis/provisioning.vsop.dev/v1alpha1/virtualservers?x=1", {
      headers: { Authorization: `Bearer ${JWT}` },
      auth: { username: "vsop", password: "hunter2-broker-pw" },
      timeout: 2000,
    });
  } catch (err) {
    return err;
  }
  throw new Error("expected the request to fail");
}

test("a component's lines name it once, and a line is one JSON object without repeated keys", () => {
  const { log, lines } = capture();
  log.child({ component: "provisioning" }).info({ route: "ks" }, "provisioning request");
  log.info("vsop starting");
  assert.equal(lines.length, 2);
  assert.equal(lines[0]!.match(/"component":/g)?.length, 1, lines[0]);
  assert.equal((JSON.parse(lines[0]!) as { component: string }).component, "provisioning");
  assert.doesNotMatch(lines[1]!, /"component":/);
});

test("a real axios error logged in any field leaks neither the bearer token nor the password", async () => {
  const err = await realAxiosError();
  // The raw object does carry them: this is what must never be written.
  assert.match(JSON.stringify((err as { config: unknown }).config), /hunter2|eyJ/);
  const { log, lines } = capture();
  log.error({ err }, "reconcile failed");
  log.warn({ error: err, nested: { deeper: { cause: err } } }, "again");
  log.info(err as Error, "as first argument");
  log.info({ list: [err] }, `message quoting Bearer ${JWT}`);
  const out = lines.join("");
  assert.equal(lines.length, 4);
  for (const secret of [JWT, "hunter2-broker-pw", "Authorization", "_header"])
    assert.ok(!out.includes(secret), `log carries ${secret}: ${out}`);
  const first = JSON.parse(lines[0]!) as { err: Record<string, unknown> };
  assert.equal(first.err.code, "ECONNREFUSED");
  assert.equal(first.err.method, "GET");
  assert.equal(first.err.path, "/apis/provisioning.vsop.dev/v1alpha1/virtualservers");
  const allowed = new Set([
    "type",
    "message",
    "code",
    "status",
    "method",
    "path",
    "fault",
    "cause",
  ]);
  for (const key of Object.keys(first.err)) assert.ok(allowed.has(key), `field ${key} logged`);
});

test("serializeError keeps only the allow-listed fields, down the cause chain", () => {
  const inner = Object.assign(new Error("socket hang up"), {
    code: "ECONNRESET",
    request: { _header: `GET / HTTP/1.1\r\nAuthorization: Bearer ${JWT}` },
  });
  const outer = Object.assign(new Error("InvalidLogin: bad password", { cause: inner }), {
    fault: "InvalidLogin",
    status: 500,
    headers: { authorization: "Basic dnNvcDpodW50ZXIy" },
    privateKey: PEM,
  });
  const s = serializeError(outer);
  assert.deepEqual(s, {
    type: "Error",
    message: "InvalidLogin: bad password",
    status: 500,
    fault: "InvalidLogin",
    cause: { type: "Error", message: "socket hang up", code: "ECONNRESET" },
  });
});

test("KubeUnreachable names the verb, path and code only", () => {
  const e = new KubeUnreachable("GET", "/api/v1/namespaces/vsop-system/secrets", "ECONNABORTED");
  assert.deepEqual(serializeError(e), {
    type: "KubeUnreachable",
    message:
      "GET /api/v1/namespaces/vsop-system/secrets: the API server did not answer (ECONNABORTED)",
    code: "ECONNABORTED",
    method: "GET",
    path: "/api/v1/namespaces/vsop-system/secrets",
  });
});

test("scrub removes credentials from free text", () => {
  const cases: [string, string][] = [
    [`Authorization: Bearer ${JWT}`, JWT],
    [`token ${JWT} expired`, JWT],
    [`cannot connect to amqps://vsop:s3cr3t-pw@broker:5671/`, "s3cr3t-pw"],
    [`key ${PEM} loaded`, "secretkeymaterial"],
    [`GET /ks/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcde`, "AbCdEfGhIjKlMnOpQrStUvWxYz"],
    [`password=hunter2 user=x`, "hunter2"],
    [`{"password": "hunter2"}`, "hunter2"],
  ];
  for (const [text, secret] of cases) {
    const out = scrub(text);
    assert.ok(!out.includes(secret), `${text} → ${out}`);
  }
  assert.equal(
    scrub("vCenter at https://vc.example.com/sdk is unreachable"),
    "vCenter at https://vc.example.com/sdk is unreachable",
  );
  assert.ok(scrub("x".repeat(10_000)).length <= 2001);
});

test("values under secret-named keys are dropped whatever their type", () => {
  const { log, lines } = capture();
  log.info({ password: "pw1", token: { value: "t" }, nested: { Authorization: "Basic abc" } }, "x");
  const line = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(line.password, "[redacted]");
  assert.equal(line.token, "[redacted]");
  assert.deepEqual(line.nested, { Authorization: "[redacted]" });
});
