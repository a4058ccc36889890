// Leader election on a coordination.k8s.io/v1 Lease, as client-go does it: the holder renews
// the lease; others take it over once they have seen no change of it for a lease duration, timed
// by their own clock (the holder's renewTime is never compared with ours, so clock skew cannot
// let a second leader in). Every attempt has its own timeout, shorter than what is left of the
// renew deadline; a leader that cannot renew by then steps down (the process exits at once and
// restarts clean), and a leader shutting down releases the lease so the next one need not wait.
import { randomBytes } from "node:crypto";
import os from "node:os";
import type { Logger } from "pino";
import { isConflict, isNotFound, type Kube } from "./kube.js";
import { sleep } from "./informer.js";

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

export interface LeaderOptions {
  namespace: string;
  name: string;
  leaseDurationSeconds: number;
  logger: Logger;
  identity?: string;
}

/** RFC 3339 with microseconds, as the Lease's MicroTime fields want. */
const microTime = (d = new Date()) => d.toISOString().replace("Z", "000Z");

export class LeaderElector {
  readonly identity: string;
  private leading = false;
  /** The lease record as last seen, and when (our clock) it last changed. */
  private observed: { record: string; at: number } | undefined;
  private readonly stopped = new AbortController();
  private readonly retryMs: number;
  private readonly renewDeadlineMs: number;

  constructor(
    private readonly kube: Kube,
    private readonly opts: LeaderOptions,
  ) {
    this.identity = opts.identity ?? `${os.hostname()}_${randomBytes(4).toString("hex")}`;
    this.retryMs = Math.max(500, (opts.leaseDurationSeconds * 1000) / 7.5);
    this.renewDeadlineMs = (opts.leaseDurationSeconds * 1000 * 2) / 3;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  private get path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases/${this.opts.name}`;
  }

  /** One attempt to acquire or renew, within timeoutMs; true when we hold the lease afterwards. */
  private async tryAcquireOrRenew(timeoutMs: number): Promise<boolean> {
    const now = new Date();
    const deadline = Date.now() + timeoutMs;
    const within = () => ({ timeout: Math.max(1, deadline - Date.now()) });
    let lease: Lease | undefined;
    try {
      lease = await this.kube.request<Lease>("GET", this.path, undefined, within());
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const spec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.opts.leaseDurationSeconds,
      renewTime: microTime(now),
    };
    if (!lease) {
      await this.kube.request(
        "POST",
        `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases`,
        {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: this.opts.name, namespace: this.opts.namespace },
          spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
        },
        within(),
      );
      return true;
    }
    const s = lease.spec;
    const mine = s.holderIdentity === this.identity;
    // client-go's observedTime: when we last saw the record change, by our clock.
    const record = JSON.stringify([s.holderIdentity, s.renewTime, lease.metadata.resourceVersion]);
    if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
    const duration = (s.leaseDurationSeconds ?? this.opts.leaseDurationSeconds) * 1000;
    const expired = !s.holderIdentity || this.observed.at + duration < Date.now();
    if (!mine && !expired) return false;
    await this.kube.request(
      "PUT",
      this.path,
      {
        ...lease,
        spec: {
          ...spec,
          acquireTime: mine ? s.acquireTime : microTime(now),
          leaseTransitions: mine ? (s.leaseTransitions ?? 0) : (s.leaseTransitions ?? 0) + 1,
        },
      },
      within(),
    );
    return true;
  }

  /** Resolves once this process leads; `onLost` runs if leadership is lost afterwards. */
  async acquire(onLost: () => void): Promise<void> {
    const log = this.opts.logger.child({ lease: `${this.opts.namespace}/${this.opts.name}` });
    log.info({ identity: this.identity }, "waiting to become leader");
    while (!this.stopped.signal.aborted) {
      try {
        if (await this.tryAcquireOrRenew(this.renewDeadlineMs)) break;
      } catch (err) {
        if (!isConflict(err)) log.warn({ err }, "lease attempt failed");
      }
      await sleep(this.retryMs, this.stopped.signal);
    }
    if (this.stopped.signal.aborted) return;
    this.leading = true;
    log.info({ identity: this.identity }, "became leader");
    void this.renewLoop(log, onLost);
  }

  private async renewLoop(log: Logger, onLost: () => void): Promise<void> {
    let lastRenew = Date.now();
    while (!this.stopped.signal.aborted) {
      await sleep(this.retryMs, this.stopped.signal);
      if (this.stopped.signal.aborted) return;
      // An attempt never outlasts the renew deadline: it gets only what is left of it.
      const left = this.renewDeadlineMs - (Date.now() - lastRenew);
      try {
        if (left > 0 && (await this.tryAcquireOrRenew(left))) {
          lastRenew = Date.now();
          continue;
        }
        if (left > 0) log.error("another process took the lease");
        else log.error("could not renew the lease within the renew deadline");
      } catch (err) {
        if (Date.now() - lastRenew < this.renewDeadlineMs) continue;
        log.error({ err }, "could not renew the lease in time");
      }
      this.leading = false;
      onLost();
      return;
    }
  }

  /** Stops campaigning; a leader gives the lease up so a standby takes over at once. */
  async release(): Promise<void> {
    this.stopped.abort();
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.kube.get<Lease>(this.path);
      if (lease.spec.holderIdentity === this.identity)
        await this.kube.replace(this.path, {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: "",
            leaseDurationSeconds: 1,
            renewTime: microTime(),
          },
        });
    } catch (err) {
      this.opts.logger.warn({ err }, "could not release the lease");
    }
  }
}
