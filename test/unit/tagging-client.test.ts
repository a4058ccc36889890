// The tagging REST client's edges that vcsim cannot show: a session that expired (one login
// again), vCenter refusing a creation (403: `denied`), an oversized answer and a silent server
// (refused unread / timed out). A local HTTP server answers in vCenter's /rest shapes.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import https from "node:https";
import { once } from "node:events";
import { TaggingClient, TaggingError } from "../../src/vsphere/tagging.js";
import { VSphereFault, VSphereUnreachable } from "../../src/vsphere/errors.js";

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

async function server(handler: Handler) {
  const seen: { method: string; url: string; session?: string; auth?: string }[] = [];
  const srv = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({
        method: req.method!,
        url: req.url!,
        session: req.headers["vmware-api-session-id"] as string | undefined,
        auth: req.headers.authorization,
      });
      handler(req, res, body);
    });
  });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = (srv.address() as { port: number }).port;
  const client = (opts: { timeoutMs?: number; maxResponseBytes?: number } = {}) =>
    new TaggingClient({
      sdkUrl: `http://127.0.0.1:${port}/sdk`,
      agent: new https.Agent(),
      username: "vsop",
      password: "s3cret",
      ...opts,
    });
  return {
    seen,
    client,
    close: () => new Promise((r) => srv.close(r)),
    /** Also drops the connections a silent handler left open. */
    closeAll: () => (srv.closeAllConnections(), srv.close()),
  };
}

const json = (res: http.ServerResponse, status: number, v: unknown) => {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(v));
};

test("logs in with basic auth, sends the session header, logs in once more after a 401", async () => {
  let sessions = 0;
  let expired = false;
  const s = await server((req, res) => {
    if (req.url === "/rest/com/vmware/cis/session")
      return json(res, 200, { value: `s${++sessions}` });
    if (!expired && req.headers["vmware-api-session-id"] === "s1") {
      expired = true;
      return json(res, 401, {});
    }
    json(res, 200, { value: ["urn:tag:1"] });
  });
  try {
    const ids = await s.client().attached("vm-1");
    assert.deepEqual(ids, ["urn:tag:1"]);
    assert.equal(s.seen[0]!.auth, `Basic ${Buffer.from("vsop:s3cret").toString("base64")}`);
    assert.equal(s.seen[1]!.session, "s1");
    assert.equal(s.seen[3]!.session, "s2", "the second login's session is used");
    assert.equal(s.seen.filter((r) => r.auth).length, 2, "credentials only in the logins");
    assert.equal(sessions, 2);
  } finally {
    await s.close();
  }
});

test("a refused creation is `denied` (403, vCenter's unauthorized error type)", async () => {
  const s = await server((req, res) => {
    if (req.url === "/rest/com/vmware/cis/session") return json(res, 200, { value: "s" });
    json(res, 403, { type: "com.vmware.vapi.std.errors.unauthorized", value: {} });
  });
  try {
    await assert.rejects(s.client().createCategory("apptype", "SINGLE"), (err: TaggingError) => {
      assert.ok(err instanceof TaggingError);
      assert.ok(err.denied);
      assert.equal(err.status, 403);
      return true;
    });
  } finally {
    await s.close();
  }
});

test("an answer over the size limit is refused unread; a silent server times out", async () => {
  const s = await server((req, res) => {
    if (req.url === "/rest/com/vmware/cis/session") return json(res, 200, { value: "s" });
    if (req.url!.includes("list-attached-tags"))
      return json(res, 200, { value: Array.from({ length: 5000 }, (_, i) => `urn:tag:${i}`) });
    // never answers
  });
  try {
    await assert.rejects(
      s.client({ maxResponseBytes: 4096 }).attached("vm-1"),
      (err: TaggingError) => err instanceof TaggingError && /too large/.test(err.message),
    );
    const started = Date.now();
    await assert.rejects(
      s.client({ timeoutMs: 300 }).tags("urn:cat:1"),
      (err: unknown) => err instanceof VSphereUnreachable,
    );
    assert.ok(Date.now() - started < 3000);
  } finally {
    s.closeAll();
  }
});

test("wrong credentials: InvalidLogin, which the steps report as VCenterAuthFailed", async () => {
  const s = await server((_req, res) => json(res, 401, {}));
  try {
    await assert.rejects(
      s.client().category("apptype"),
      (err: unknown) => err instanceof VSphereFault && err.fault === "InvalidLogin",
    );
  } finally {
    await s.close();
  }
});
