// The server's Puppet certificate, which vsop's autosign answer had signed: its serial and expiry
// shown in status.puppet.certificate, and revoked and cleaned at the CA when the server is
// deleted (policy Delete) or installed anew, so the same hostname can get a certificate again.
// Each is one short HTTP call to the CA (puppet/ca-client.ts), never a wait.
import { createHash } from "node:crypto";
import type { VirtualServerClass } from "../../api/types.js";
import { StepError } from "../../errors.js";
import {
  PuppetCA,
  PuppetCAError,
  PuppetCAUnreachable,
  type CertificateStatus,
} from "../../puppet/ca-client.js";
import { DONE, type ReconcileContext, type Step, type StepOutcome } from "../engine/context.js";
import type { InstallToken } from "../clients/install-tokens.js";
import type { ConfigReader } from "../clients/secrets.js";

/** What the step needs of the CA. */
export interface PuppetCAPort {
  status(certname: string): Promise<CertificateStatus | undefined>;
  revoke(certname: string): Promise<void>;
  clean(certname: string): Promise<void>;
}

export interface CertificateDeps {
  /** The server's install record: whether vsop's autosign answer spent its challenge. */
  record: (uid: string, fresh: boolean) => Promise<InstallToken | undefined>;
  /** The class's CA client; undefined when the class names no CA (puppet.caURL). */
  ca: (cls: VirtualServerClass) => Promise<PuppetCAPort | undefined>;
}

/** Turns a CA failure into the condition a person reads. */
function caStepError(err: unknown, deleting: boolean): unknown {
  if (err instanceof PuppetCAUnreachable)
    return new StepError(
      "PuppetCAUnreachable",
      deleting
        ? `${err.message}; vsop cleans the server's certificate there before it releases the object, and retries.`
        : `${err.message}; vsop retries.`,
      { cause: err, retryAfterSeconds: 15, status: "Unknown" },
    );
  if (err instanceof PuppetCAError)
    return new StepError(
      "PuppetCAError",
      `${err.message}. ${
        err.status === 403 || err.status === 401
          ? "Allow vsop's client certificate (class puppet.caClientSecret) for /puppet-ca/v1/certificate_status in the master's auth.conf."
          : "Check the master's log."
      } vsop retries every minute.`,
      { cause: err, retryAfterSeconds: 60 },
    );
  return err;
}

/**
 * Revokes and cleans the server's certificate at the CA, when vsop's autosign had it signed
 * (status shows it, or the install record says the challenge was spent). A certificate for the
 * name with another serial than the one vsop saw signed is someone else's: left alone. The
 * record is read only when the class names a CA and status shows no certificate.
 */
export async function cleanCertificate(
  deps: CertificateDeps,
  ctx: ReconcileContext,
  record: () => Promise<InstallToken | undefined>,
): Promise<void> {
  // No CA in the class: nothing vsop could have had signed there, nor clean.
  if (!ctx.cls.spec.puppet?.caURL) return;
  const known = ctx.status.puppet?.certificate;
  if (!known?.serial && !(await record())?.challengeSpentAt) return;
  const ca = await deps.ca(ctx.cls);
  if (!ca) return;
  const certname = ctx.vs.spec.hostname;
  const deleting = !!ctx.vs.metadata.deletionTimestamp;
  try {
    const st = await ca.status(certname);
    if (st && known?.serial && st.serial && st.serial !== known.serial) {
      ctx.log.warn(
        { certname, serial: st.serial, ours: known.serial },
        "the CA's certificate for this name is not the one vsop had signed; left alone",
      );
    } else if (st) {
      if (st.state === "signed") await ca.revoke(certname);
      await ca.clean(certname);
      ctx.log.info(
        { certname, serial: st.serial, state: st.state },
        "Puppet certificate revoked and cleaned at the CA",
      );
    }
  } catch (err) {
    throw caStepError(err, deleting);
  }
  if (ctx.status.puppet?.certificate) {
    const rest = { ...ctx.status.puppet };
    delete rest.certificate;
    ctx.status.puppet = rest;
  }
}

export function certificateStep(deps: CertificateDeps): Step {
  return {
    name: "certificate",
    async run(ctx) {
      const p = ctx.status.puppet;
      // Nothing to show before a Puppet run finished (the agent asks for its certificate then),
      // nor once shown (the CA keeps a certificate until vsop cleans it).
      if (!ctx.cls.spec.puppet?.caURL || !p?.lastRunAt || p.certificate?.serial) return DONE;
      const record = await deps.record(ctx.vs.metadata.uid!, false);
      if (!record?.challengeSpentAt) return DONE; // not signed through vsop
      const ca = await deps.ca(ctx.cls);
      if (!ca) return DONE;
      let st: CertificateStatus | undefined;
      try {
        st = await ca.status(ctx.vs.spec.hostname);
      } catch (err) {
        // Showing the certificate is not worth a server's Ready: log and look again later.
        ctx.log.warn(
          { err: caStepError(err, false) },
          "cannot read the Puppet certificate's status",
        );
        ctx.recheckAfterSeconds = 60;
        return DONE;
      }
      if (st?.state !== "signed") {
        ctx.recheckAfterSeconds = 60;
        return DONE;
      }
      ctx.status.puppet = {
        ...p,
        certificate: {
          ...(st.serial ? { serial: st.serial } : {}),
          ...(st.notAfter ? { notAfter: st.notAfter } : {}),
        },
      };
      ctx.log.info(
        { serial: st.serial, notAfter: st.notAfter },
        "Puppet certificate signed through vsop's autosign",
      );
      return DONE;
    },

    async finalize(ctx): Promise<StepOutcome> {
      if (ctx.vs.spec.deletionPolicy === "Retain") return DONE; // the server keeps running
      await cleanCertificate(deps, ctx, () => deps.record(ctx.vs.metadata.uid!, true));
      return DONE;
    },
  };
}

/**
 * One CA client per class settings and client certificate; a changed Secret or URL gets a new
 * client (the Secret is read through ConfigReader's short cache).
 */
export class PuppetCAPool {
  /** By class name: the client and what it was made from. */
  private readonly clients = new Map<string, { id: string; client: PuppetCA }>();

  constructor(private readonly config: ConfigReader) {}

  async get(cls: VirtualServerClass): Promise<PuppetCAPort | undefined> {
    const p = cls.spec.puppet;
    if (!p?.caURL) return undefined;
    if (!p.caClientSecret)
      throw new StepError(
        "InvalidClass",
        `VirtualServerClass ${cls.metadata.name} sets puppet.caURL without puppet.caClientSecret; name the Secret with vsop's CA client certificate.`,
      );
    const s = await this.config.secret(p.caClientSecret, "Puppet CA client", [
      "tls.crt",
      "tls.key",
      "ca.crt",
    ]);
    const id = createHash("sha256")
      .update([p.caURL, s["tls.crt"], s["tls.key"], s["ca.crt"]].join("\0"))
      .digest("hex");
    const known = this.clients.get(cls.metadata.name);
    if (known?.id === id) return known.client;
    known?.client.close();
    let client: PuppetCA;
    try {
      client = new PuppetCA({
        url: p.caURL,
        cert: s["tls.crt"]!,
        key: s["tls.key"]!,
        ca: s["ca.crt"]!,
      });
    } catch (err) {
      throw caStepError(err, false);
    }
    this.clients.set(cls.metadata.name, { id, client });
    return client;
  }

  stop(): void {
    for (const c of this.clients.values()) c.client.close();
    this.clients.clear();
  }
}
