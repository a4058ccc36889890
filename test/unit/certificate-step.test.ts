// The certificate step against a fake CA: shown once signed through vsop, revoked and cleaned on
// delete (policy Delete) and before a reinstall, left alone when it is not the one vsop saw signed,
// and a CA that cannot be reached is PuppetCAUnreachable.
import { test } from "node:test";
import assert from "node:assert/strict";
import { StepError } from "../../src/errors.js";
import { PuppetCAError, PuppetCAUnreachable } from "../../src/puppet/ca-client.js";
import {
  certificateStep,
  cleanCertificate,
  type CertificateDeps,
  type PuppetCAPort,
} from "../../src/reconcile/steps/certificate-step.js";
import type { InstallToken } from "../../src/reconcile/clients/install-tokens.js";
import type { CertificateStatus } from "../../src/puppet/ca-client.js";
import { stepContext } from "../support/step-fakes.js";

const CLASS = { puppet: { caURL: "https://puppet.test:8140", caClientSecret: "ca" } };
const HOST = "web-prod-1.example.test";

function fakeCA(status: CertificateStatus | undefined | Error) {
  const calls: string[] = [];
  const ca: PuppetCAPort = {
    status: async (n) => {
      calls.push(`GET ${n}`);
      if (status instanceof Error) throw status;
      return status;
    },
    revoke: async (n) => void calls.push(`PUT revoked ${n}`),
    clean: async (n) => void calls.push(`DELETE ${n}`),
  };
  return { ca, calls };
}

const record = (over: Partial<InstallToken> = {}) =>
  ({ owner: { uid: "u" }, challengeHash: "h", ...over }) as InstallToken;

function deps(ca: PuppetCAPort, rec: InstallToken | undefined): CertificateDeps {
  return { record: async () => rec, ca: async (cls) => (cls.spec.puppet?.caURL ? ca : undefined) };
}

test("after the first run, a certificate vsop's autosign had signed is shown once", async () => {
  const { ca, calls } = fakeCA({ state: "signed", serial: "7", notAfter: "2031-01-01T00:00:00Z" });
  const step = certificateStep(deps(ca, record({ challengeSpentAt: "2026-01-01T00:00:00Z" })));
  const ctx = stepContext({ puppet: { lastRunAt: "2026-01-01T00:01:00Z" } }, CLASS);
  assert.deepEqual(await step.run(ctx), { done: true });
  assert.deepEqual(ctx.status.puppet?.certificate, {
    serial: "7",
    notAfter: "2031-01-01T00:00:00Z",
  });
  await step.run(ctx);
  assert.deepEqual(calls, [`GET ${HOST}`], "asked once");
});

test("nothing is asked without a CA, before a run, or for a certificate vsop did not sign", async () => {
  const { ca, calls } = fakeCA({ state: "signed", serial: "7" });
  const ran = { puppet: { lastRunAt: "2026-01-01T00:01:00Z" } };
  await certificateStep(deps(ca, record({ challengeSpentAt: "x" }))).run(stepContext(ran, {}));
  await certificateStep(deps(ca, record({ challengeSpentAt: "x" }))).run(stepContext({}, CLASS));
  await certificateStep(deps(ca, record())).run(stepContext(ran, CLASS));
  assert.deepEqual(calls, []);
});

test("a CA down while showing it costs no Ready: logged, looked at again later", async () => {
  const { ca } = fakeCA(new PuppetCAUnreachable("the Puppet CA cannot be reached (ECONNREFUSED)"));
  const ctx = stepContext({ puppet: { lastRunAt: "2026-01-01T00:01:00Z" } }, CLASS);
  assert.deepEqual(await certificateStep(deps(ca, record({ challengeSpentAt: "x" }))).run(ctx), {
    done: true,
  });
  assert.equal(ctx.recheckAfterSeconds, 60);
  assert.equal(ctx.status.puppet?.certificate, undefined);
});

test("deleted (policy Delete): revoked, then cleaned; Retain leaves it", async () => {
  const { ca, calls } = fakeCA({ state: "signed", serial: "7" });
  const ctx = stepContext({ puppet: { certificate: { serial: "7" } } }, CLASS);
  ctx.vs.metadata.deletionTimestamp = "2026-01-01T00:00:00Z";
  await certificateStep(deps(ca, record({ challengeSpentAt: "x" }))).finalize!(ctx);
  assert.deepEqual(calls, [`GET ${HOST}`, `PUT revoked ${HOST}`, `DELETE ${HOST}`]);
  assert.equal(ctx.status.puppet?.certificate, undefined);

  const kept = fakeCA({ state: "signed", serial: "7" });
  const retain = stepContext({ puppet: { certificate: { serial: "7" } } }, CLASS);
  retain.vs.spec.deletionPolicy = "Retain";
  await certificateStep(deps(kept.ca, record({ challengeSpentAt: "x" }))).finalize!(retain);
  assert.deepEqual(kept.calls, []);
});

test("deleted, class without a CA: the install record is not read", async () => {
  const { ca, calls } = fakeCA({ state: "signed", serial: "7" });
  let reads = 0;
  const counting: CertificateDeps = {
    ...deps(ca, record({ challengeSpentAt: "x" })),
    record: async () => (reads++, record({ challengeSpentAt: "x" })),
  };
  const ctx = stepContext({}, {});
  ctx.vs.metadata.deletionTimestamp = "2026-01-01T00:00:00Z";
  assert.deepEqual(await certificateStep(counting).finalize!(ctx), { done: true });
  assert.equal(reads, 0);
  assert.deepEqual(calls, []);
});

test("a reinstall reads the install record only when the class names a CA and status shows none", async () => {
  let reads = 0;
  const reader = async () => (reads++, record({ challengeSpentAt: "x" }));
  const noCA = fakeCA({ state: "signed", serial: "7" });
  await cleanCertificate(deps(noCA.ca, undefined), stepContext({}, {}), reader);
  assert.equal(reads, 0, "no CA in the class: the record is not read");
  assert.deepEqual(noCA.calls, []);

  const shown = fakeCA({ state: "signed", serial: "7" });
  const ctx = stepContext({ puppet: { certificate: { serial: "7" } } }, CLASS);
  await cleanCertificate(deps(shown.ca, undefined), ctx, reader);
  assert.equal(reads, 0, "status shows the certificate: the record is not needed");
  assert.deepEqual(shown.calls, [`GET ${HOST}`, `PUT revoked ${HOST}`, `DELETE ${HOST}`]);

  const unshown = fakeCA({ state: "signed", serial: "7" });
  await cleanCertificate(deps(unshown.ca, undefined), stepContext({}, CLASS), reader);
  assert.equal(reads, 1);
  assert.deepEqual(unshown.calls, [`GET ${HOST}`, `PUT revoked ${HOST}`, `DELETE ${HOST}`]);
});

test("a pending request is cleaned without a revoke; another serial is someone else's", async () => {
  const pending = fakeCA({ state: "requested" });
  await cleanCertificate(deps(pending.ca, undefined), stepContext({}, CLASS), async () =>
    record({ challengeSpentAt: "x" }),
  );
  assert.deepEqual(pending.calls, [`GET ${HOST}`, `DELETE ${HOST}`]);

  const other = fakeCA({ state: "signed", serial: "9" });
  await cleanCertificate(
    deps(other.ca, undefined),
    stepContext({ puppet: { certificate: { serial: "7" } } }, CLASS),
    async () => record({ challengeSpentAt: "x" }),
  );
  assert.deepEqual(other.calls, [`GET ${HOST}`], "not revoked, not deleted");

  const never = fakeCA({ state: "signed", serial: "9" });
  await cleanCertificate(deps(never.ca, undefined), stepContext({}, CLASS), async () => record());
  assert.deepEqual(never.calls, [], "a challenge never spent: vsop signed nothing");
});

test("CA failures become PuppetCAUnreachable (retried) and PuppetCAError (auth.conf)", async () => {
  const ctx = stepContext({ puppet: { certificate: { serial: "7" } } }, CLASS);
  const down = fakeCA(
    new PuppetCAUnreachable("the Puppet CA cannot be reached (no answer in time)"),
  );
  await assert.rejects(
    cleanCertificate(deps(down.ca, undefined), ctx, async () => undefined),
    (e: StepError) => {
      assert.equal(e.reason, "PuppetCAUnreachable");
      assert.equal(e.options.retryAfterSeconds, 15);
      return true;
    },
  );
  const denied = fakeCA(new PuppetCAError("the Puppet CA answered GET with HTTP 403", 403, "GET"));
  await assert.rejects(
    cleanCertificate(deps(denied.ca, undefined), ctx, async () => undefined),
    (e: StepError) => {
      assert.equal(e.reason, "PuppetCAError");
      assert.match(e.message, /auth\.conf/);
      return true;
    },
  );
});
