// One interface per boot method (network, iso, guestinfo): the VM it needs, how the install data
// reaches the installer, and how that path is taken away after the install and on delete. Each
// returns an outcome while a vSphere task it started runs, undefined when it has nothing to do.
import type { VirtualServerClass } from "../../api/types.js";
import type { NicSpec, VMRecord } from "../../vsphere/vcenter.js";
import type { ReconcileContext, StepOutcome } from "../engine/context.js";
import type { BootContext } from "./install-data.js";
import type { VSpherePort } from "../engine/ports.js";

/** Records a Warning Event on the server (e.g. BootNICReconnected). */
export type RecordWarning = (ctx: BootContext["ctx"], reason: string, message: string) => void;

export interface BootMethod {
  readonly name: "network" | "iso" | "guestinfo";
  /** NICs the VM gets beside its service NIC. */
  nics(cls: VirtualServerClass): NicSpec[];
  /** Whether the VM boots from its CD-ROM. */
  readonly bootFromCdrom: boolean;
  /** Before a VM is created: throws a StepError when the class's boot media cannot work. */
  check?(vc: VSpherePort, ctx: ReconcileContext): Promise<void>;
  /** Before power-on: puts the install data where the installer finds it. */
  prepare(b: BootContext): Promise<StepOutcome | undefined>;
  /** After the install: takes the install path away (and keeps it away). */
  handoff(b: BootContext, record: RecordWarning): Promise<StepOutcome | undefined>;
  /** On delete: removes what prepare left outside the VM (the VM may be gone already). */
  cleanup(b: Omit<BootContext, "vm"> & { vm?: VMRecord }): Promise<StepOutcome | undefined>;
}
