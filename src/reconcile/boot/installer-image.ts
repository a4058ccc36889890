// Before a VM is created for an iso install with boot.installerISO: the vendor image must exist
// and boot under the class's firmware. Its El Torito boot record and boot catalog (one sector
// each, read with HTTP Range requests, never the whole image) say which platforms it boots on.
import { effectiveHardware } from "../../api/defaults.js";
import { StepError } from "../../errors.js";
import {
  BOOT_RECORD_SECTOR,
  BootCatalogInvalid,
  bootCatalogSector,
  bootPlatforms,
  firmwarePlatform,
  platformName,
  SECTOR,
} from "../../provision/eltorito.js";
import { DatastoreFileNotFound, parseDatastorePath } from "../../vsphere/vcenter.js";
import type { ReconcileContext } from "../engine/context.js";
import type { VSpherePort } from "../engine/ports.js";
import { vsphereStepError } from "../engine/vsphere-errors.js";

/** Throws InstallerISONotFound or InstallerISONotBootable; returns when the image fits. */
export async function checkInstallerImage(
  vc: Pick<VSpherePort, "readFileRange">,
  ctx: ReconcileContext,
): Promise<void> {
  const image = ctx.cls.spec.boot?.installerISO;
  if (!image) return;
  const where = parseDatastorePath(image);
  if (!where)
    throw new StepError(
      "InvalidClass",
      `boot.installerISO "${image}" is not a datastore path such as [LocalDS_0] isos/installer.iso; fix the class.`,
      { condition: "VMCreated" },
    );
  const firmware = effectiveHardware(ctx.vs, ctx.cls.spec).firmware ?? "bios";
  const datacenter = ctx.cls.spec.placement.datacenter;
  const read = (sector: number) =>
    vc
      .readFileRange(datacenter, where.datastore, where.path, sector * SECTOR, SECTOR)
      .catch((err: unknown) => {
        if (err instanceof DatastoreFileNotFound)
          throw new StepError(
            "InstallerISONotFound",
            `The installer image ${image} (boot.installerISO) does not exist in datacenter ` +
              `${datacenter}; nothing was created. Upload it there or fix the path.`,
            { condition: "VMCreated", cause: err },
          );
        throw vsphereStepError(err, { condition: "VMCreated" });
      });
  const refuse = (why: string) =>
    new StepError(
      "InstallerISONotBootable",
      `The installer image ${image} (boot.installerISO) cannot boot a VM with ${firmware} ` +
        `firmware: ${why}; nothing was created. Use an image with an El Torito entry for ` +
        `${platformName(firmwarePlatform(firmware))} (a hybrid image boots under BIOS and EFI), ` +
        "or change hardware.firmware.",
      { condition: "VMCreated" },
    );

  const catalog = bootCatalogSector(await read(BOOT_RECORD_SECTOR));
  if (catalog === undefined) throw refuse("it has no El Torito boot record");
  let platforms: number[];
  try {
    platforms = bootPlatforms(await read(catalog));
  } catch (err) {
    if (err instanceof BootCatalogInvalid) throw refuse(err.message);
    throw err;
  }
  if (!platforms.includes(firmwarePlatform(firmware)))
    throw refuse(
      platforms.length
        ? `its boot catalog has entries for ${platforms.map(platformName).join(" and ")} only`
        : "its boot catalog has no bootable entry",
    );
  ctx.log.debug(
    { image, platforms: platforms.map(platformName) },
    "installer image boots under the class's firmware",
  );
}
