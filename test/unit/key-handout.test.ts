// The /bootstrap keys when the answer is lost after they were recorded (the operator killed
// mid-answer, an API server that applied a write it did not confirm in time): the installer's
// retry with its nonce gets the same keys, nobody else gets any, and a caller without a nonce
// gets them once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { publicKeyPemOf } from "../../src/provision/identity-key.js";
import type { BootstrapSecrets } from "../../src/provision/sealed-keys.js";
import { KubeUnreachable } from "../../src/controller/kube.js";
import { hashChallenge } from "../../src/puppet/trusted-facts.js";
import { handOutKeys, type KeyRecords } from "../../src/reconcile/boot/key-handout.js";
import type { InstallToken } from "../../src/reconcile/clients/install-tokens.js";

const NONCE = "0123456789abcdef0123456789abcdef";
const OTHER_NONCE = "fedcba9876543210fedcba9876543210";

/** One install record; `timeout: "lost" | "landed"` makes the next write time out. */
function records() {
  const rec: InstallToken = {
    state: "pending",
    owner: { uid: "u", namespace: "ns", name: "web" },
  } as InstallToken;
  const state = { timeout: undefined as "lost" | "landed" | undefined, writes: 0 };
  const store: KeyRecords = {
    async claimKeys(_t, identityPublicKey, challengeHash, keysSealed) {
      if (rec.keysFetchedAt) return false;
      const outcome = state.timeout;
      state.timeout = undefined;
      if (outcome !== "lost") {
        Object.assign(rec, { keysFetchedAt: "now", identityPublicKey, challengeHash, keysSealed });
        state.writes++;
      }
      if (outcome) throw new KubeUnreachable("PATCH", "/api/v1/secrets/x", "ETIMEDOUT");
      return true;
    },
    get: async () => ({ ...rec }),
  };
  return { rec, state, store };
}

/** The record as a (lagging) watch had it before any keys. */
const stale = (rec: InstallToken) =>
  ({ ...rec, keysFetchedAt: undefined, keysSealed: undefined }) as InstallToken;

const asIs = async (secrets: BootstrapSecrets) => secrets;

const matches = (privatePem: string, publicPem: string) => publicKeyPemOf(privatePem) === publicPem;

test("keys are recorded and handed out once to a caller without a nonce", async () => {
  const { rec, store } = records();
  const first = await handOutKeys(store, { ...rec }, undefined, asIs);
  assert.ok(first && !first.again);
  assert.ok(matches(first.value.identityPrivateKeyPem, rec.identityPublicKey!));
  assert.equal(rec.challengeHash, hashChallenge(first.value.challenge));
  assert.equal(rec.keysSealed, undefined, "nothing sealed without a nonce");
  assert.equal(await handOutKeys(store, { ...rec }, undefined, asIs), undefined);
  assert.equal(await handOutKeys(store, { ...rec }, NONCE, asIs), undefined);
});

test("the installer's retry with its nonce gets the same keys; nobody else gets any", async () => {
  const { rec, state, store } = records();
  const first = await handOutKeys(store, { ...rec }, NONCE, asIs);
  assert.ok(first && !first.again);
  assert.ok(rec.keysSealed, "the keys are sealed in the record");
  assert.doesNotMatch(Buffer.from(rec.keysSealed, "base64").toString("latin1"), /PRIVATE KEY/);
  assert.ok(!rec.keysSealed.includes(first.value.challenge), "the challenge is sealed too");
  const retry = await handOutKeys(store, { ...rec }, NONCE, asIs);
  assert.ok(retry?.again);
  assert.equal(retry.value.identityPrivateKeyPem, first.value.identityPrivateKeyPem);
  assert.ok(matches(retry.value.identityPrivateKeyPem, rec.identityPublicKey!));
  assert.equal(retry.value.challenge, first.value.challenge);
  assert.equal(await handOutKeys(store, { ...rec }, OTHER_NONCE, asIs), undefined);
  assert.equal(await handOutKeys(store, { ...rec }, undefined, asIs), undefined);
  assert.equal(state.writes, 1);
});

test("a recording that timed out but landed: the retry gets those keys, also from a stale watch", async () => {
  const { rec, state, store } = records();
  state.timeout = "landed";
  await assert.rejects(handOutKeys(store, { ...rec }, NONCE, asIs), KubeUnreachable);
  const recorded = rec.identityPublicKey!;
  const retry = await handOutKeys(store, stale(rec), NONCE, asIs);
  assert.ok(retry?.again);
  assert.ok(matches(retry.value.identityPrivateKeyPem, recorded));
  assert.equal(rec.challengeHash, hashChallenge(retry.value.challenge));
  assert.equal(state.writes, 1);
  assert.equal(await handOutKeys(store, stale(rec), OTHER_NONCE, asIs), undefined);
});

test("a recording that timed out and was lost: the retry gets new keys, recorded", async () => {
  const { rec, state, store } = records();
  state.timeout = "lost";
  await assert.rejects(handOutKeys(store, { ...rec }, NONCE, asIs));
  assert.equal(rec.keysFetchedAt, undefined);
  const retry = await handOutKeys(store, { ...rec }, NONCE, asIs);
  assert.ok(retry && !retry.again);
  assert.ok(matches(retry.value.identityPrivateKeyPem, rec.identityPublicKey!));
  assert.equal(state.writes, 1);
});

test("two installers race: one gets keys, the other nothing", async () => {
  const { rec, store } = records();
  const [a, b] = await Promise.all([
    handOutKeys(store, { ...rec }, NONCE, asIs),
    handOutKeys(store, { ...rec }, OTHER_NONCE, asIs),
  ]);
  assert.equal([a, b].filter(Boolean).length, 1);
  const winner = (a ?? b)!;
  assert.ok(matches(winner.value.identityPrivateKeyPem, rec.identityPublicKey!));
});

test("a spent token's sealed keys are not handed out", async () => {
  const { rec, store } = records();
  await handOutKeys(store, { ...rec }, NONCE, asIs);
  assert.equal(await handOutKeys(store, { ...rec, state: "built" }, NONCE, asIs), undefined);
});

test("a render that fails records nothing", async () => {
  const { rec, state, store } = records();
  const failing = async () => {
    throw new Error("the broker login Secret cannot be read");
  };
  await assert.rejects(handOutKeys(store, { ...rec }, NONCE, failing), /broker login/);
  assert.equal(state.writes, 0);
  assert.equal(rec.keysFetchedAt, undefined);
  assert.ok(await handOutKeys(store, { ...rec }, NONCE, asIs), "the retry gets keys");
});
