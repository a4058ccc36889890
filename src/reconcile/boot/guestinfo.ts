// guestinfo: cloud-init data (NoCloud via the VMware datasource) in the VM's extraConfig; cleared
// after the install, and on delete of a retained VM, since nobody needs it afterwards.
import { GUESTINFO_KEYS, guestinfoExtraConfig } from "../../provision/guestinfo.js";
import { tokenedCloudInit, type BootContext } from "./install-data.js";
import { startTask } from "../engine/vsphere-task.js";
import type { BootMethod } from "./boot-method.js";

const CLEARED = Object.fromEntries(GUESTINFO_KEYS.map((k) => [k, ""]));

async function clear({ ctx, vc, vm }: BootContext) {
  if (!GUESTINFO_KEYS.some((k) => vm.extraConfig[k])) {
    if (ctx.finished === "ClearGuestinfo") ctx.log.info("guestinfo install data cleared");
    return undefined;
  }
  return startTask(
    ctx,
    vc,
    "ClearGuestinfo",
    () => vc.startSetExtraConfig(vm.moRef, CLEARED),
    `Clearing the install data in VM ${vm.name}'s guestinfo.`,
    ctx.vs.metadata.deletionTimestamp ? "Deleting" : undefined,
  );
}

export const guestinfoBoot: BootMethod = {
  name: "guestinfo",
  bootFromCdrom: false,
  nics: () => [],

  async prepare({ ctx, deps, vc, vm }) {
    if (vm.extraConfig["guestinfo.userdata"]) return undefined;
    const files = await tokenedCloudInit(deps, ctx);
    return startTask(
      ctx,
      vc,
      "SetGuestinfo",
      () => vc.startSetExtraConfig(vm.moRef, guestinfoExtraConfig(files)),
      `Setting the cloud-init data of VM ${vm.name} in guestinfo.`,
    );
  },

  // The data carries the URLs of a spent token; nobody needs it after the install.
  handoff: (b) => clear(b),

  // A deleted VM takes its data along; a retained one keeps none.
  async cleanup(b) {
    if (b.ctx.vs.spec.deletionPolicy !== "Retain" || !b.vm) return undefined;
    return clear({ ...b, vm: b.vm });
  },
};
