// Errors classified once, at the engine's boundary: steps throw what went wrong, and this table
// turns it into the short reason and the sentence a person acts on, reported on the condition of
// the step that failed. A family with its own table (vSphere faults) is delegated to it.
import type { ConditionType } from "../../api/types.js";
import { InvalidClassField } from "../../api/effective-class.js";
import { KubeUnreachable } from "../../controller/kube.js";
import { StepError } from "../../errors.js";
import { GuestinfoError } from "../../provision/guestinfo.js";
import { IsoBuildError } from "../../provision/iso.js";
import { NetworkConfigError } from "../../provision/network-config.js";
import { TemplateError } from "../../provision/template.js";
import { InstallVariablesError } from "../../provision/variables.js";
import {
  VSphereFault,
  VSphereTaskError,
  VSphereTLSError,
  VSphereUnreachable,
} from "../../vsphere/errors.js";
import {
  DatastoreUploadFailed,
  DeviceNotFound,
  DuplicateOwnerMarker,
  InvalidVMSpec,
  PlacementNotFound,
  PortGroupNotFound,
  NoStorageDrsRecommendation,
  StoragePolicyIncompatible,
  StoragePolicyNotFound,
  TemplateHasNoSnapshot,
  VMNotFound,
  VSphereVerifyError,
} from "../../vsphere/vcenter.js";
import { vsphereStepError } from "./vsphere-errors.js";

/** The condition each step's failures are reported on (the boot NIC's: the handoff's). */
export const STEP_CONDITION: Record<string, ConditionType | undefined> = {
  naming: "NameResolved",
  vm: "VMCreated",
  rebuild: "Installed",
  prepare: "Installed",
  installed: "Installed",
  puppet: "PuppetApplied",
};

type Rule = [
  (err: unknown) => boolean,
  (err: Error, condition: ConditionType | undefined) => StepError,
];

const is =
  (...classes: (abstract new (...args: never[]) => Error)[]) =>
  (err: unknown) =>
    classes.some((c) => err instanceof c);

const RULES: Rule[] = [
  [
    is(InvalidClassField),
    (e) => new StepError("InvalidClass", `${e.message}; fix the class.`, { cause: e }),
  ],
  [
    is(TemplateError, InstallVariablesError, NetworkConfigError, GuestinfoError),
    (e) =>
      new StepError(
        "TemplateError",
        `The install data cannot be used: ${e.message}. Fix the template.`,
        {
          condition: "Installed",
          cause: e,
        },
      ),
  ],
  [
    is(IsoBuildError),
    (e) =>
      new StepError("IsoBuildFailed", `Building the boot ISO failed: ${e.message}. vsop retries.`, {
        condition: "Installed",
        cause: e,
      }),
  ],
  [
    is(
      KubeUnreachable,
      VSphereFault,
      VSphereTaskError,
      VSphereTLSError,
      VSphereUnreachable,
      PlacementNotFound,
      PortGroupNotFound,
      DatastoreUploadFailed,
      DuplicateOwnerMarker,
      VMNotFound,
      DeviceNotFound,
      VSphereVerifyError,
      InvalidVMSpec,
      TemplateHasNoSnapshot,
      StoragePolicyNotFound,
      StoragePolicyIncompatible,
      NoStorageDrsRecommendation,
    ),
    (e, condition) => vsphereStepError(e, { condition }),
  ],
];

export function classify(err: unknown, step: string): StepError {
  if (err instanceof StepError) return err;
  const condition = STEP_CONDITION[step];
  for (const [matches, make] of RULES) if (matches(err)) return make(err as Error, condition);
  return new StepError(
    "InternalError",
    `Step ${step} failed unexpectedly: ${(err as Error).message}`,
    { cause: err },
  );
}
