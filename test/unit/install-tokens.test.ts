import { test } from "node:test";
import assert from "node:assert/strict";
import { KubeError, type Kube } from "../../src/controller/kube.js";
import { InstallTokens, type SecretObject } from "../../src/reconcile/clients/install-tokens.js";

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
