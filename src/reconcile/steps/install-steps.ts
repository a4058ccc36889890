// Steps 3-5: hand the VM to its installer through its boot method (boot/: network, iso,
// guestinfo) and power it on; wait until it is installed; then let the boot method take the
// install path away. Waiting is a requeue, never a blocked worker.
import { bootMethod } from "../../api/defaults.js";
import { StepError } from "../../errors.js";
import type { VMRecord } from "../../vsphere/vcenter.js";
import type { VSpherePort } from "../engine/ports.js";
import { bootMethodOf } from "../boot/index.js";
import type { RecordWarning } from "../boot/boot-method.js";
import { condition, DONE, wait, type ReconcileContext, type Step } from "../engine/context.js";
import type { InstallDeps } from "../boot/install-data.js";
import type { InstallToken } from "../clients/install-tokens.js";
import { connectedVCenter, ownedVM, recordVM } from "./vm-step.js";
import { startTask, taskInFlight } from "../engine/vsphere-task.js";

export type { InstallDeps } from "../boot/install-data.js";

async function vmOf(
  deps: InstallDeps,
  ctx: ReconcileContext,
): Promise<{ vc: VSpherePort; vm: VMRecord } | undefined> {
  const vc = await connectedVCenter(deps.pool, ctx);
  const vm = vc && ownedVM(vc, ctx);
  return vc && vm ? { vc, vm } : undefined;
}

const installed = (ctx: ReconcileContext) => !!ctx.status.install?.completedAt;

/** Hands the VM to its installer through the boot method, then powers it on. */
export function prepareStep(deps: InstallDeps): Step {
  return {
    name: "prepare",
    async run(ctx) {
      if (installed(ctx)) return DONE;
      const started = ctx.status.install?.startedAt;
      if (started) {
        // Installed since this power-on, though status does not say so yet (the process that
        // saw it died before writing it): the installed step records it. Preparing again would
        // put back the install data the handoff may have taken away already. That record was
        // written before the crash, so the watch's copy of it is enough.
        const token = await deps.tokens.known(ctx.vs.metadata.uid!);
        if (token?.state === "built" && (token.builtAt ?? "") >= started) return DONE;
      }
      const found = await vmOf(deps, ctx);
      if (!found) return wait(2, "Creating", "Creating", "Waiting for vCenter to report the VM.");
      const { vc, vm } = found;
      const method = bootMethodOf(ctx.cls);
      if (!ctx.status.install?.startedAt) {
        // A fresh install (also of a VM recreated after the old one vanished) needs an unused
        // token: a token spent on the previous VM would answer 410 to the new installer, and
        // one whose kickstart or keys were fetched would carry the old installer's record. That
        // record was written by the earlier install, so the watch's copy of it is enough.
        const previous = await deps.tokens.known(ctx.vs.metadata.uid!);
        if (
          previous?.state === "built" ||
          previous?.kickstartFetchedAt ||
          previous?.keysFetchedAt
        ) {
          // The earlier install's Puppet certificate goes first: the new system asks for one
          // under the same name, which the CA refuses while the old one is there.
          await deps.beforeReinstall?.(ctx, previous);
          await deps.tokens.delete(ctx.vs.metadata.uid!);
        }
      }
      // An image that needs no install (boot.assumeInstalled): nothing to hand over.
      if (!ctx.cls.spec.boot?.assumeInstalled) {
        const preparing = await method.prepare({ ctx, deps, vc, vm });
        if (preparing) return preparing;
      }
      // Powered on until it is installed (also again, after someone powered it off).
      if (vm.powerState !== "poweredOn" || !ctx.status.install?.startedAt) {
        const powering = await startTask(
          ctx,
          vc,
          "PowerOn",
          () => vc.startPower(vm.moRef, true),
          `Powering on VM ${vm.name} to install it.`,
        );
        if (!ctx.status.install?.startedAt) {
          ctx.status.install = {
            ...ctx.status.install,
            method: method.name,
            startedAt: new Date().toISOString(),
          };
          ctx.log.info({ method: method.name }, "VM powered on to install");
        }
        if (powering) return powering;
      }

      recordVM(ctx, vc.get(vm.moRef) ?? vm);
      return DONE;
    },

    /** The install token goes; the boot method removes what it left outside the VM. */
    async finalize(ctx) {
      await deps.tokens.delete(ctx.vs.metadata.uid!);
      const retain = ctx.vs.spec.deletionPolicy === "Retain";
      const method = bootMethodOf(ctx.cls);
      const { iso, installerISO } = ctx.status.install ?? {};
      if (!iso && !installerISO && !(retain && method.name === "guestinfo")) return DONE;
      const vc = await connectedVCenter(deps.pool, ctx);
      if (!vc)
        return wait(2, "Deleting", "ConnectingToVCenter", "Connecting to vCenter to clean up.");
      const busy = await taskInFlight(ctx, vc, "Deleting");
      if (busy) return busy;
      return (await method.cleanup({ ctx, deps, vc, vm: ownedVM(vc, ctx) })) ?? DONE;
    },
  };
}

/**
 * Copies what the provisioning endpoint recorded in the install record into status, once each:
 * when the installing system fetched its keys, and its first sign of life (kickstartFetchedAt:
 * the kickstart for network installs; iso and guestinfo carry their install data with the VM, so
 * for them it is the key fetch). The reconciler announces the latter with one Normal Event.
 */
function copyInstallerProgress(ctx: ReconcileContext, token: InstallToken | undefined): void {
  const install = ctx.status.install;
  if (!token || !install?.startedAt) return;
  const first = [token.kickstartFetchedAt, token.keysFetchedAt]
    .filter((t): t is string => !!t)
    .sort()[0];
  if ((first && !install.kickstartFetchedAt) || (token.keysFetchedAt && !install.keysFetchedAt)) {
    ctx.status.install = {
      ...install,
      kickstartFetchedAt: install.kickstartFetchedAt ?? first,
      keysFetchedAt: install.keysFetchedAt ?? token.keysFetchedAt,
    };
  }
}

/**
 * The Ready message while installing: since when, whether the installer showed up yet, and that
 * spec.powerState Off waits for the install (the VM runs until then).
 */
function installingMessage(ctx: ReconcileContext): string {
  const i = ctx.status.install ?? {};
  const host = ctx.vs.spec.hostname;
  const what = (i.method ?? bootMethod(ctx.cls.spec)) === "network" ? "kickstart" : "keys";
  const progress = i.kickstartFetchedAt
    ? `${host} is installing: powered on at ${i.startedAt}, the installer fetched its ${what} at ${i.kickstartFetchedAt}.`
    : `${host} is installing: powered on at ${i.startedAt}, waiting for the installer to fetch its ${what}.`;
  return ctx.vs.spec.powerState === "Off"
    ? `${progress} spec.powerState Off applies once the install finished.`
    : progress;
}

/** Installed when the completion callback came, mcollectived answers, or the class says so. */
export function installedStep(deps: InstallDeps): Step {
  return {
    name: "installed",
    async run(ctx) {
      if (!installed(ctx)) {
        let completedAt: string | undefined;
        let token: InstallToken | undefined;
        if (ctx.cls.spec.boot?.assumeInstalled) completedAt = new Date().toISOString();
        else {
          token = await deps.tokens.get(ctx.vs.metadata.uid!);
          copyInstallerProgress(ctx, token);
          const started = ctx.status.install?.startedAt ?? "";
          if (token?.state === "built" && (token.builtAt ?? "") >= started)
            completedAt = token.builtAt ?? new Date().toISOString();
          else if (await deps.discover?.(ctx).catch(() => false))
            completedAt = new Date().toISOString();
        }
        if (!completedAt) {
          const started = Date.parse(ctx.status.install?.startedAt ?? "") || Date.now();
          const timeout = ctx.settings.installTimeout;
          if (Date.now() - started > timeout.seconds * 1000) {
            throw new StepError(
              "InstallTimedOut",
              `${ctx.vs.spec.hostname} has not reported an installed system within ` +
                `${timeout.text} of power-on; check its console. vsop keeps watching.`,
              { condition: "Installed", retryAfterSeconds: 30 },
            );
          }
          condition(
            ctx,
            "Installed",
            "False",
            "WaitingForInstall",
            `Waiting for ${ctx.vs.spec.hostname} to finish installing.`,
          );
          // The installer's calls (kickstart, keys, /built) wake the key; only a node that has
          // its keys can be asked through MCollective, which takes a poll. Otherwise the next
          // look is at the timeout, or in a minute should a wake be missed.
          const left = Math.ceil((started + timeout.seconds * 1000 - Date.now()) / 1000);
          const every = token?.identityPublicKey ? 5 : Math.max(1, Math.min(60, left));
          return wait(every, "Installing", "Installing", installingMessage(ctx));
        }
        // The install is known: the token is spent however it became known, so /ks,
        // /bootstrap and /built answer 410 from now on.
        token ??= await deps.tokens.get(ctx.vs.metadata.uid!);
        if (token?.state === "pending") await deps.tokens.markBuilt(token);
        ctx.status.install = { ...ctx.status.install, completedAt };
        ctx.log.info("server reports installed");
        const startedAt = Date.parse(ctx.status.install.startedAt ?? "");
        if (!Number.isNaN(startedAt))
          deps.onInstalled?.(
            bootMethod(ctx.cls.spec),
            Math.max(0, (Date.parse(completedAt) - startedAt) / 1000),
          );
      }
      const { method, completedAt } = ctx.status.install!;
      if (method === "adopted")
        condition(
          ctx,
          "Installed",
          "True",
          "Adopted",
          `Adopted at ${completedAt}; not installed by vsop.`,
        );
      else condition(ctx, "Installed", "True", "Installed", `Installed at ${completedAt}.`);
      return DONE;
    },
  };
}

/** Lets the boot method take the install path away: boot NIC off, ISO gone, guestinfo cleared. */
export function handoffStep(deps: InstallDeps, record: RecordWarning): Step {
  return {
    name: "handoff",
    async run(ctx) {
      const found = await vmOf(deps, ctx);
      if (!found) return wait(2, "Configuring", "ConnectingToVCenter", "Connecting to vCenter.");
      const { vc, vm } = found;
      const handing = await bootMethodOf(ctx.cls).handoff({ ctx, deps, vc, vm }, record);
      if (handing) return handing;

      recordVM(ctx, vc.get(vm.moRef) ?? vm);
      return DONE;
    },
  };
}
