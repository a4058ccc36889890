// placement.datastore, or placement.datastoreCluster: Storage DRS recommends the datastore once,
// before the VM is created, and status.vm.datastore keeps the choice (written before CreateVM),
// so a retry or a restart creates the VM where the first answer said, and the server's later
// datastore uses (boot ISO, new data disks by default) go to the same place.
import type { VirtualServerClassSpec, VirtualServerStatus } from "../../api/types.js";
import type { CreateVMSpec, Placement } from "../../vsphere/vcenter.js";
import { wait, type ReconcileContext, type StepOutcome } from "../engine/context.js";
import type { VSpherePort } from "../engine/ports.js";
import { vsphereStepError } from "../engine/vsphere-errors.js";

/** The server's datastore: the class's, or the one Storage DRS chose for it ("" before that). */
export function datastoreOf(cls: VirtualServerClassSpec, status?: VirtualServerStatus): string {
  return cls.placement.datastore ?? status?.vm?.datastore ?? "";
}

/** The class's placement with the server's datastore. */
export function placementOf(cls: VirtualServerClassSpec, status?: VirtualServerStatus): Placement {
  return { ...cls.placement, datastore: datastoreOf(cls, status) };
}

/** Asks Storage DRS for a datastore when the class names a cluster and none was chosen yet. */
export async function chooseDatastore(
  vc: Pick<VSpherePort, "recommendDatastore">,
  ctx: ReconcileContext,
  spec: CreateVMSpec,
): Promise<StepOutcome | undefined> {
  const { placement } = ctx.cls.spec;
  const pod = placement.datastoreCluster;
  if (placement.datastore || !pod || ctx.status.vm?.datastore) return undefined;
  let datastore: string;
  try {
    datastore = await vc.recommendDatastore(placement, pod, spec);
  } catch (err) {
    throw vsphereStepError(err, { condition: "VMCreated" });
  }
  ctx.status.vm = { ...ctx.status.vm, datastore };
  ctx.log.info({ datastoreCluster: pod, datastore }, "Storage DRS chose the datastore");
  return wait(
    0,
    "Creating",
    "Creating",
    `Storage DRS chose datastore ${datastore} in datastore cluster ${pod}.`,
  );
}
