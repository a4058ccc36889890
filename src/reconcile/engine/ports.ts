// What the steps need of the outside world, as small interfaces: the steps depend on these, not
// on the concrete clients, so each step is unit-tested with fakes (test/support/fake-vsphere.ts).
import type { VirtualServerClass } from "../../api/types.js";
import type { PuppetClient } from "../../mcollective/puppet.js";
import type { VCenter } from "../../vsphere/vcenter.js";

/** The vSphere operations the steps use: cached reads, started tasks, the task bookkeeping. */
export type VSpherePort = Pick<
  VCenter,
  | "synced"
  | "lastError"
  | "get"
  | "findByOwnerUID"
  | "findByName"
  | "checkPlacement"
  | "recommendDatastore"
  | "checkPortGroup"
  | "startCreateVM"
  | "startFinishVM"
  | "startPower"
  | "startShutdownGuest"
  | "startRebootGuest"
  | "startReset"
  | "startDestroy"
  | "startResize"
  | "startConfigureDisks"
  | "startSetNicConnected"
  | "startAddNics"
  | "startSetExtraConfig"
  | "startAttachIso"
  | "startDetachIso"
  | "startDeleteFile"
  | "uploadFile"
  | "readFileRange"
  | "taskState"
  | "track"
  | "inFlight"
  | "forget"
>;

/** The vSphere client for a class's vCenter. */
export interface VSpherePool {
  get(cls: VirtualServerClass): Promise<VSpherePort>;
}

/** The Puppet agent calls the steps make through MCollective, and how long each may take. */
export type PuppetPort = Pick<PuppetClient, "runonce" | "lastRunSummary" | "status" | "timeoutMs">;

/** The Puppet client for a class's broker. */
export interface McoPort {
  get(cls: VirtualServerClass): Promise<{ puppet: PuppetPort }>;
}
