// Keys sealed for one installer: only its nonce, on the same record, opens them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { isWellFormedNonce, seal, unseal } from "../../src/provision/sealed-keys.js";

const SECRETS = { identityPrivateKeyPem: "-----BEGIN PRIVATE KEY-----\nx\n", challenge: "c1" };
const NONCE = "0123456789abcdef0123456789abcdef";

test("the nonce and the record it was sealed for open the seal, nothing else does", () => {
  const sealed = seal(SECRETS, NONCE, "uid-1");
  assert.deepEqual(unseal(sealed, NONCE, "uid-1"), SECRETS);
  assert.equal(unseal(sealed, NONCE.replace("0", "1"), "uid-1"), undefined, "another nonce");
  assert.equal(unseal(sealed, NONCE, "uid-2"), undefined, "another record");
  assert.notEqual(seal(SECRETS, NONCE, "uid-1"), sealed, "a fresh IV each time");
  const raw = Buffer.from(sealed, "base64");
  raw[raw.length - 1]! ^= 1;
  assert.equal(unseal(raw.toString("base64"), NONCE, "uid-1"), undefined, "tampered");
  assert.equal(unseal("", NONCE, "uid-1"), undefined);
  assert.equal(unseal("A".repeat(5000), NONCE, "uid-1"), undefined, "oversized");
});

test("nonces: 32 to 128 URL-safe characters", () => {
  assert.ok(isWellFormedNonce(NONCE));
  assert.ok(isWellFormedNonce("a".repeat(128)));
  assert.ok(!isWellFormedNonce("a".repeat(31)), "too short to be random enough");
  assert.ok(!isWellFormedNonce("a".repeat(129)));
  assert.ok(!isWellFormedNonce(`${NONCE} `));
});
