// iso: a per-server NoCloud ISO uploaded to the class's datastore and inserted in the VM's CD-ROM;
// after the install (and on delete) it is taken out of the drive and deleted. Its path is
// recorded in status before the upload, so no crash leaves a file vsop does not know about.
import { placementOf } from "../datastore-choice.js";
import { vmName } from "../../api/defaults.js";
import { buildIso } from "../../provision/iso.js";
import { noCloudFiles } from "../../provision/render.js";
import { datastorePath } from "../../vsphere/vcenter.js";
import { wait, type ReconcileContext, type StepOutcome } from "../context.js";
import { tokenedCloudInit, type BootContext } from "../install-data.js";
import { powerOffToDelete, startTask } from "../vsphere-task.js";
import type { BootMethod } from "./boot-method.js";

const isoFile = (ctx: ReconcileContext) =>
  `vsop/${vmName(ctx.vs, ctx.cls.spec)}-${ctx.vs.metadata.uid!.slice(0, 8)}.iso`;

/** Out of the drive (powered off first when the VM goes too), then off the datastore. */
async function removeIso(
  { ctx, vc, vm }: Omit<BootContext, "vm"> & { vm?: BootContext["vm"] },
  iso: string,
  powerOffFirst: boolean,
): Promise<StepOutcome | undefined> {
  const p = placementOf(ctx.cls.spec, ctx.status);
  if (ctx.finished === "DeleteISO") {
    ctx.log.info({ iso }, "boot ISO detached and deleted");
    ctx.status.install = { ...ctx.status.install, iso: undefined };
    return undefined;
  }
  const phase = ctx.vs.metadata.deletionTimestamp ? "Deleting" : undefined;
  // vSphere will not delete an ISO that a VM still holds.
  if (vm?.cdroms.some((c) => c.isoPath)) {
    const step =
      (powerOffFirst ? await powerOffToDelete(ctx, vc, vm, phase) : undefined) ??
      (await startTask(
        ctx,
        vc,
        "DetachISO",
        () => vc.startDetachIso(vm.moRef),
        `Detaching the boot ISO from VM ${vm.name}.`,
        phase,
      ));
    if (step) return step;
  }
  return startTask(
    ctx,
    vc,
    "DeleteISO",
    () => vc.startDeleteFile(p.datacenter, p.datastore, isoFile(ctx)),
    `Deleting the boot ISO ${iso}.`,
    phase,
  );
}

export const isoBoot: BootMethod = {
  name: "iso",
  bootFromCdrom: true,
  nics: () => [],

  async prepare({ ctx, deps, vc, vm }) {
    const p = placementOf(ctx.cls.spec, ctx.status);
    const path = datastorePath(p.datastore, isoFile(ctx));
    if (vm.cdroms.some((c) => c.isoPath === path)) return undefined;
    if (ctx.status.install?.iso !== path) {
      // Recorded (status written) before the upload, so a delete after any crash knows the file.
      ctx.status.install = { ...ctx.status.install, iso: path };
      return wait(0, "Creating", "PoweringOn", "Preparing the boot ISO.");
    }
    const files = await tokenedCloudInit(deps, ctx);
    const iso = await buildIso({
      volumeId: "cidata",
      files: noCloudFiles(files),
      tmpDir: deps.tmpDir,
    });
    await vc.uploadFile(p.datacenter, p.datastore, isoFile(ctx), iso);
    ctx.log.info({ iso: path, bytes: iso.length }, "boot ISO uploaded");
    return startTask(
      ctx,
      vc,
      "AttachISO",
      () => vc.startAttachIso(vm.moRef, path),
      `Attaching the boot ISO to VM ${vm.name}.`,
    );
  },

  async handoff(b) {
    const iso = b.ctx.status.install?.iso;
    return iso ? removeIso(b, iso, false) : undefined;
  },

  async cleanup(b) {
    const iso = b.ctx.status.install?.iso;
    return iso ? removeIso(b, iso, b.ctx.vs.spec.deletionPolicy !== "Retain") : undefined;
  },
};
