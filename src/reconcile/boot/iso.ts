// iso: a per-server ISO uploaded to the class's datastore and inserted in the VM's CD-ROM, no boot
// NIC. Two modes:
// - an image that boots by itself reads the ISO as cloud-init NoCloud data (volume "cidata");
// - with boot.installerISO the VM boots the vendor installer from its first CD-ROM and anaconda
//   finds the server's kickstart as ks.cfg on the per-server ISO (volume "OEMDRV") in the second.
//   The image is checked to boot under the class's firmware before the VM is created.
// After the install (and on delete) every ISO is taken out of the drives and the per-server one
// is deleted; the installer image is not vsop's and is never deleted. Both paths are recorded in
// status before the upload, so no crash leaves a file or attachment vsop does not know about.
import { placementOf } from "../steps/datastore-choice.js";
import { vmName } from "../../api/defaults.js";
import { buildIso } from "../../provision/iso.js";
import { noCloudFiles } from "../../provision/render.js";
import { datastorePath } from "../../vsphere/vcenter.js";
import { wait, type ReconcileContext, type StepOutcome } from "../engine/context.js";
import { tokenedCloudInit, tokenedKickstart, type BootContext } from "./install-data.js";
import { powerOffToDelete, startTask } from "../engine/vsphere-task.js";
import type { BootMethod } from "./boot-method.js";
import { checkInstallerImage } from "./installer-image.js";

const isoFile = (ctx: ReconcileContext) =>
  `vsop/${vmName(ctx.vs, ctx.cls.spec)}-${ctx.vs.metadata.uid!.slice(0, 8)}.iso`;

/**
 * The ISOs status records out of the drives (powered off first when the VM goes too), then vsop's
 * own off the datastore; nothing to do when status records none.
 */
async function removeIso(
  { ctx, vc, vm }: Omit<BootContext, "vm"> & { vm?: BootContext["vm"] },
  powerOffFirst: boolean,
): Promise<StepOutcome | undefined> {
  const { iso, installerISO } = ctx.status.install ?? {};
  if (!iso && !installerISO) return undefined;
  const p = placementOf(ctx.cls.spec, ctx.status);
  if (ctx.finished === "DeleteISO") {
    ctx.log.info({ iso }, "boot ISO detached and deleted");
    ctx.status.install = { ...ctx.status.install, iso: undefined };
    return undefined;
  }
  const phase = ctx.vs.metadata.deletionTimestamp ? "Deleting" : undefined;
  // vSphere will not delete an ISO that a VM still holds. startDetachIso empties every drive: the
  // installer image's too.
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
  // Detached (or the VM is gone): the installer image stays where it is, vsop is done with it.
  if (installerISO) {
    ctx.log.info({ installerISO }, "installer image detached");
    ctx.status.install = { ...ctx.status.install, installerISO: undefined };
  }
  if (!iso) return undefined;
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

  check: (vc, ctx) => checkInstallerImage(vc, ctx),

  async prepare({ ctx, deps, vc, vm }) {
    const p = placementOf(ctx.cls.spec, ctx.status);
    const path = datastorePath(p.datastore, isoFile(ctx));
    const installer = ctx.cls.spec.boot?.installerISO;
    // The installer image boots from the first drive; the server's own ISO is read from another.
    const drives = installer ? [installer, path] : [path];
    if (drives.every((d) => vm.cdroms.some((c) => c.isoPath === d))) return undefined;
    const install = ctx.status.install;
    if (install?.iso !== path || install.installerISO !== installer) {
      // Recorded (status written) before the upload, so a delete after any crash knows the file.
      ctx.status.install = { ...install, iso: path, installerISO: installer };
      return wait(0, "Creating", "PoweringOn", "Preparing the boot ISO.");
    }
    const iso = installer
      ? await buildIso({
          volumeId: "OEMDRV",
          files: { "ks.cfg": await tokenedKickstart(deps, ctx) },
          tmpDir: deps.tmpDir,
        })
      : await buildIso({
          volumeId: "cidata",
          files: noCloudFiles(await tokenedCloudInit(deps, ctx)),
          tmpDir: deps.tmpDir,
        });
    await vc.uploadFile(p.datacenter, p.datastore, isoFile(ctx), iso);
    ctx.log.info({ iso: path, bytes: iso.length, installer }, "boot ISO uploaded");
    return startTask(
      ctx,
      vc,
      "AttachISO",
      () => vc.startAttachIso(vm.moRef, drives),
      installer
        ? `Attaching the installer image and the kickstart ISO to VM ${vm.name}.`
        : `Attaching the boot ISO to VM ${vm.name}.`,
    );
  },

  handoff: (b) => removeIso(b, false),

  cleanup: (b) => removeIso(b, b.ctx.vs.spec.deletionPolicy !== "Retain"),
};
