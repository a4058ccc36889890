// network: PXE on a boot NIC in the Boot-VLAN and a kickstart fetched with the server's one-time
// token; after the install the boot NIC is disconnected, and disconnected again whenever someone
// reconnects it (connected again only to install anew: a rebuild). The only place vsop touches
// the boot NIC.
import { effectiveNetwork } from "../../api/defaults.js";
import { condition } from "../engine/context.js";
import { checkInstallFiles } from "./install-data.js";
import { startTask } from "../engine/vsphere-task.js";
import type { BootMethod } from "./boot-method.js";

export const networkBoot: BootMethod = {
  name: "network",
  bootFromCdrom: false,
  nics: (cls) => [{ portGroup: effectiveNetwork(cls.spec).bootPortGroup, role: "boot" }],

  async prepare({ ctx, deps, vc, vm }) {
    const token = await deps.tokens.ensure(ctx.vs);
    // The kickstart and key bundle are rendered when the installer asks for them; render them
    // once before power-on too, so a broken template or a missing key Secret is an error here,
    // not a failing install.
    if (!ctx.status.install?.startedAt) await checkInstallFiles(deps, ctx, token.token);
    // The installer boots from the boot NIC. A new VM has it connected; a rebuilt one had it
    // disconnected by the previous handoff.
    const bootPG = effectiveNetwork(ctx.cls.spec).bootPortGroup;
    const nic = vm.nics.find((n) => n.portGroup === bootPG);
    if (!nic || nic.startConnected) return undefined;
    ctx.log.info({ nic: nic.macAddress }, "connecting boot NIC for the install");
    return startTask(
      ctx,
      vc,
      "ConnectBootNIC",
      () => vc.startSetNicConnected(vm.moRef, nic.key, true),
      `Connecting the boot NIC of VM ${vm.name} for its install.`,
    );
  },

  async handoff({ ctx, vc, vm }, record) {
    const bootPG = effectiveNetwork(ctx.cls.spec).bootPortGroup;
    const nic = vm.nics.find((n) => n.portGroup === bootPG);
    if (nic && (nic.connected || nic.startConnected)) {
      const was =
        ctx.status.conditions?.find((c) => c.type === "BootNICDisconnected")?.status === "True";
      const disconnecting = await startTask(
        ctx,
        vc,
        "DisconnectBootNIC",
        () => vc.startSetNicConnected(vm.moRef, nic.key, false),
        `Disconnecting the boot NIC of VM ${vm.name}.`,
      );
      if (disconnecting) {
        if (was)
          record(
            ctx,
            "BootNICReconnected",
            `The boot NIC ${nic.macAddress ?? nic.label} was connected again; vsop disconnects it.`,
          );
        ctx.log.info({ nic: nic.macAddress, drift: was }, "disconnecting boot NIC");
        return disconnecting;
      }
    }
    if (ctx.finished === "DisconnectBootNIC") ctx.log.info("boot NIC disconnected");
    condition(
      ctx,
      "BootNICDisconnected",
      "True",
      "Disconnected",
      `The boot NIC on ${bootPG} is disconnected.`,
    );
    return undefined;
  },

  // The kickstart lives in memory behind the token, which the prepare step's cleanup deletes.
  cleanup: async () => undefined,
};
