import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as k8s from "@kubernetes/client-node";
import { Kube, KubeUnreachable } from "../../src/controller/kube.js";

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
