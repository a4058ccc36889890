// The guests of the chaos campaign: once vsop powered a VM on, its installer reads the install
// data the way its boot method hands it over (kickstart over HTTP with the token its PXE config
// carries, the ISO from the datastore, guestinfo from the VM), fetches its keys once, "starts
// mcollectived" (the in-process fleet answers for it with its identity key from then on) and
// reports completion. An attempt that meets a killed operator or a stopped vCenter is retried;
// the key fetch with the same nonce, so keys whose answer a kill lost come again. Every other
// installer's first key fetch loses its answer on purpose, so that retry is taken in every run.
import type { VS } from "../harness.js";
import type { Fleet } from "../fleet.js";
import { throughPort } from "../proxy.js";
import {
  bootstrapFiles,
  bootstrapURLIn,
  builtURLIn,
  callBuilt,
  fetchBootstrap,
  fetchKickstart,
  IDENTITY_KEY_PATH,
  installToken,
  newInstallerNonce,
  readGuestinfo,
  readIsoFromDatastore,
} from "../installer.js";

export type BootMethodName = "network" | "iso" | "guestinfo";

export interface GuestEnv {
  /** Where installers reach the provisioning endpoint (a proxy in front of both replicas). */
  provisioningPort: number;
  /** The same endpoint with every answer lost on the way: every other installer's first key fetch. */
  lossyProvisioningPort?: number;
  /** GOVC_* of the campaign's vCenter. */
  vcEnv: Record<string, string>;
  fleet: Fleet;
}

interface InstallStatus {
  startedAt?: string;
  completedAt?: string;
  iso?: string;
}

/** What the installer still has to do for one server (by UID), across attempts. */
interface Progress {
  /** Sent with every try of the key fetch, as the shipped templates do. */
  nonce: string;
  /** The next key fetch goes through the lossy endpoint: its answer never arrives. */
  loseAnswer: boolean;
  key?: string;
  built?: boolean;
}

export class Guests {
  private readonly progress = new Map<string, Progress>();
  private readonly busy = new Set<string>();
  /** After a failed attempt, the next one waits (Date.now() by UID). */
  private readonly retryAt = new Map<string, number>();
  /** Keys lost: fetched by an attempt that never got the answer (the one-time bundle is gone). */
  readonly keysLost = new Set<string>();
  attempts = 0;
  /** Failed attempts (retried) by what went wrong. */
  readonly failures: Record<string, number> = {};

  constructor(private readonly env: GuestEnv) {}

  /** Starts an attempt for each powered-on server whose install is not done (at most `max`). */
  tick(servers: VS[], method: (vs: VS) => BootMethodName, max: number, skip: Set<string>): void {
    for (const vs of servers) {
      if (this.busy.size >= max) return;
      const uid = vs.metadata.uid;
      const install = vs.status?.install as InstallStatus | undefined;
      const p = this.progress.get(uid);
      const m = method(vs);
      if (
        !install?.startedAt ||
        p?.built ||
        this.busy.has(uid) ||
        (this.retryAt.get(uid) ?? 0) > Date.now() ||
        vs.metadata.deletionTimestamp ||
        skip.has(m)
      )
        continue;
      this.busy.add(uid);
      this.attempts++;
      void this.attempt(vs, m, install)
        .catch((err: unknown) => {
          // "kickstart: 503", "fetch failed", ...: the first words name the failure; an install
          // token in a URL is left out (the report is printed).
          const why = (err as Error).message
            .replace(/\/(ks|bootstrap|built)\/[^\s/?]+/g, "/$1/<token>")
            .split(/[(\n]/)[0]!
            .slice(0, 50)
            .trim();
          this.failures[why] = (this.failures[why] ?? 0) + 1;
          this.retryAt.set(uid, Date.now() + 2000);
        })
        .finally(() => this.busy.delete(uid));
    }
  }

  private async attempt(vs: VS, method: BootMethodName, install: InstallStatus): Promise<void> {
    const uid = vs.metadata.uid;
    const fqdn = vs.spec.hostname as string;
    const p = this.progress.get(uid) ?? {
      nonce: newInstallerNonce(),
      loseAnswer: this.progress.size % 2 === 0 && this.env.lossyProvisioningPort !== undefined,
    };
    this.progress.set(uid, p);
    let data: string;
    if (method === "network") {
      const ks = await fetchKickstart(this.env.provisioningPort, installToken(uid));
      if (ks.status !== 200) throw new Error(`kickstart: ${ks.status}`);
      data = ks.body;
    } else if (method === "iso") {
      if (!install.iso) throw new Error("no ISO recorded");
      data = readIsoFromDatastore(install.iso, this.env.vcEnv)["user-data"] ?? "";
    } else {
      data = readGuestinfo(fqdn.split(".")[0]!, this.env.vcEnv).userData;
    }
    // The URLs point at the provisioning URL vsop was given: the campaign's proxy.
    if (!p.key) {
      const url = bootstrapURLIn(data);
      if (p.loseAnswer) {
        // The keys are recorded and answered, the answer never arrives; retried with the nonce.
        p.loseAnswer = false;
        const lossy = throughPort(url, this.env.lossyProvisioningPort!);
        await fetchBootstrap(lossy, { nonce: p.nonce, timeoutMs: 3000 }).catch(() => undefined);
        throw new Error("bootstrap: answer lost on the way");
      }
      const r = await fetchBootstrap(url, { nonce: p.nonce });
      if (r.status === 410) this.keysLost.add(uid);
      if (r.status !== 200) throw new Error(`bootstrap: ${r.status}`);
      const key = bootstrapFiles(r.body)[IDENTITY_KEY_PATH];
      if (!key) throw new Error("the bootstrap carries no identity key");
      p.key = key;
      this.keysLost.delete(uid);
      await this.env.fleet.install(fqdn, key);
    }
    const status = await callBuilt(builtURLIn(data));
    if (status !== 204 && status !== 410) throw new Error(`built: ${status}`);
    p.built = true;
  }
}
