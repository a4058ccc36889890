import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as k8s from "@kubernetes/client-node";
import { Kube, KubeError, KubeUnreachable } from "../../src/controller/kube.js";

/** A peer that answers a watch with `behaviour`, then holds the connection open, silent. */
async function peer(behaviour: "oneEventThenSilence" | "noHeaders"): Promise<Server> {
  const server = createServer((_req, res) => {
    if (behaviour === "noHeaders") return; // accepted, never answered
    res.writeHead(200, { "content-type": "application/json" });
    res.write(`${JSON.stringify({ type: "ADDED", object: { metadata: { name: "a" } } })}\n`);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return server;
}

function kubeFor(server: Server): Kube {
  const kc = new k8s.KubeConfig();
  const { port } = server.address() as AddressInfo;
  kc.loadFromOptions({
    clusters: [{ name: "c", server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return new Kube(kc);
}

test("a watch whose peer goes silent ends at the idle deadline (the informer re-watches)", async (t) => {
  const server = await peer("oneEventThenSilence");
  t.after(() => server.close(() => undefined) && server.closeAllConnections());
  const events: string[] = [];
  const started = Date.now();
  await kubeFor(server).watch(
    "/api/v1/secrets",
    {},
    (e) => events.push(e.type),
    new AbortController().signal,
    300,
  );
  assert.deepEqual(events, ["ADDED"]);
  assert.ok(Date.now() - started < 3000, `ended after ${Date.now() - started} ms`);
});

test("a peer that accepts and never answers fails the watch with KubeUnreachable", async (t) => {
  const server = await peer("noHeaders");
  t.after(() => server.close(() => undefined) && server.closeAllConnections());
  const watching = kubeFor(server).watch(
    "/api/v1/secrets",
    {},
    () => undefined,
    new AbortController().signal,
    300,
  );
  await assert.rejects(watching, KubeUnreachable);
});

test("a list is read item by item, uncompressed; a refusal is a KubeError with its reason", async (t) => {
  const items = Array.from({ length: 50 }, (_, i) => ({
    metadata: { name: `o${i}` },
    pad: "x".repeat(3000),
  }));
  const seen: { encoding?: string; url?: string }[] = [];
  const server = createServer((req, res) => {
    seen.push({ encoding: req.headers["accept-encoding"], url: req.url });
    if (req.url?.includes("refuse")) {
      res.writeHead(410, { "content-type": "application/json" });
      res.end(JSON.stringify({ kind: "Status", reason: "Expired", message: "too old", code: 410 }));
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    const body = JSON.stringify({
      apiVersion: "v1",
      items,
      kind: "L",
      metadata: { resourceVersion: "77" },
    });
    // In small writes, so items straddle chunks.
    for (let i = 0; i < body.length; i += 1000) res.write(body.slice(i, i + 1000));
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => server.close());
  const kube = kubeFor(server);
  const got: string[] = [];
  const meta = await kube.list<{ metadata: { name: string } }>(
    "/api/v1/things",
    { resourceVersion: "0" },
    (o) => got.push(o.metadata.name),
  );
  assert.deepEqual(
    got,
    items.map((o) => o.metadata.name),
  );
  assert.equal(meta.resourceVersion, "77");
  assert.equal(seen[0]!.encoding, "identity");
  assert.equal(seen[0]!.url, "/api/v1/things?resourceVersion=0");
  await assert.rejects(
    kube.list("/api/v1/refuse", {}, () => undefined),
    (err: unknown) => err instanceof KubeError && err.status === 410 && err.reason === "Expired",
  );
});

test("watch events are read whole across chunks: split lines, split UTF-8, blank lines", async (t) => {
  const events = [
    {
      type: "ADDED",
      object: {
        metadata: { name: "café-ü", managedFields: [{ manager: "m", fieldsV1: { "f:a": {} } }] },
        spec: { note: "naïve — 日本" },
      },
    },
    { type: "MODIFIED", object: { metadata: { name: "b" }, spec: { note: "x".repeat(5000) } } },
    { type: "DELETED", object: { metadata: { name: "c" } } },
  ];
  const body = Buffer.from(`${events.map((e) => JSON.stringify(e)).join("\n\n")}\n`);
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    // 7-byte writes: lines, and the multi-byte characters in them, straddle chunks.
    let i = 0;
    const next = () => {
      if (i >= body.length) return res.end();
      res.write(body.subarray(i, (i += 7)), next);
    };
    next();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => server.close());
  const got: unknown[] = [];
  await kubeFor(server).watch(
    "/api/v1/things",
    {},
    (e) => got.push(e),
    new AbortController().signal,
  );
  const cut = structuredClone(events);
  (cut[0]!.object.metadata as { managedFields: unknown }).managedFields = null;
  assert.deepEqual(got, cut);
});
