import { test } from "node:test";
import assert from "node:assert/strict";
import { KubeError, type Kube } from "../../src/controller/kube.js";
import type { InformerHandler } from "../../src/controller/informer.js";
import { InstallTokens, type SecretObject } from "../../src/reconcile/clients/install-tokens.js";
import { hashToken } from "../../src/provision/tokens.js";

const b64 = (s: string) => Buffer.from(s).toString("base64");

/** A Kube whose Secrets live in a map; counts the GETs. */
function secretsKube() {
  const secrets = new Map<string, SecretObject>();
  const state = { gets: 0 };
  const kube = {
    async get(path: string) {
      state.gets++;
      const s = secrets.get(path.split("/").pop()!);
      if (!s) throw new KubeError(404, "NotFound", "not found", "GET", path);
      return s;
    },
    async delete(path: string) {
      secrets.delete(path.split("/").pop()!);
    },
  } as unknown as Kube;
  const claim = (uid: string, key: string) =>
    secrets.set(`vsop-install-${uid}`, {
      metadata: { name: `vsop-install-${uid}` },
      data: { state: b64("built"), identityPublicKey: b64(key) },
    });
  return { kube, state, claim };
}

test("identityKey: read fresh while installing, once per install after it", async () => {
  const { kube, state, claim } = secretsKube();
  const tokens = new InstallTokens(kube, "vsop-system");

  // Installing: every call reads, as a key claimed through another replica must be seen at once.
  assert.equal(await tokens.identityKey("u1"), undefined);
  claim("u1", "KEY-1");
  assert.equal(await tokens.identityKey("u1"), "KEY-1");
  assert.equal(state.gets, 2);

  // Installed: one read, then the answer is kept for that install.
  assert.equal(await tokens.identityKey("u1", "2026-01-01T00:00:00Z"), "KEY-1");
  assert.equal(await tokens.identityKey("u1", "2026-01-01T00:00:00Z"), "KEY-1");
  assert.equal(state.gets, 3);

  // A server without any record (boot.assumeInstalled, adopted): its absence is kept as well.
  assert.equal(await tokens.identityKey("u2", "2026-01-01T00:00:00Z"), undefined);
  assert.equal(await tokens.identityKey("u2", "2026-01-01T00:00:00Z"), undefined);
  assert.equal(state.gets, 4);

  // A new install (rebuild) is read again, and so is a server whose record was deleted.
  claim("u1", "KEY-2");
  assert.equal(await tokens.identityKey("u1", "2026-02-01T00:00:00Z"), "KEY-2");
  assert.equal(state.gets, 5);
  await tokens.delete("u1");
  assert.equal(await tokens.identityKey("u1", "2026-02-01T00:00:00Z"), undefined);
  assert.equal(state.gets, 6);
});

test("find: a watched record by its token, through the hash index; no API call either way", async () => {
  const { kube, state } = secretsKube();
  const record = (uid: string, token: string): SecretObject => ({
    metadata: {
      name: `vsop-install-${uid}`,
      namespace: "vsop-system",
      labels: { "provisioning.vsop.dev/install-token-hash": hashToken(token).slice(0, 40) },
    },
    data: { token: b64(token), tokenHash: b64(hashToken(token)), state: b64("pending") },
  });
  // A watch of the records, as the Informer tells its handlers.
  const handlers: InformerHandler<SecretObject>[] = [];
  const cached = new Map<string, SecretObject>();
  const records = {
    synced: true,
    on: (h: InformerHandler<SecretObject>) => void handlers.push(h),
    get: (key: string) => cached.get(key),
  };
  const tell = (e: "add" | "delete", s: SecretObject) => {
    const key = `vsop-system/${s.metadata.name}`;
    if (e === "add") cached.set(key, s);
    else cached.delete(key);
    for (const h of handlers) h(e, s, undefined, key);
  };
  const tokens = new InstallTokens(kube, "vsop-system", records);
  for (let i = 0; i < 100; i++) tell("add", record(`u${i}`, `token-${i}`));
  assert.equal((await tokens.find("token-42"))?.token, "token-42");
  assert.equal(await tokens.find("token-x"), undefined);
  tell("delete", record("u42", "token-42"));
  assert.equal(await tokens.find("token-42"), undefined, "a deleted record no longer answers");
  assert.equal(state.gets, 0);
});
