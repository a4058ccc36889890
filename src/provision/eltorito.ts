// El Torito, read just far enough to say which firmware an ISO image boots under: the boot record
// volume descriptor (sector 17) points at the boot catalog, whose validation entry, default
// entry and section headers name the platforms with a bootable entry (0x00 x86 BIOS, 0xEF EFI).
// Pure functions over bytes the caller read (at most a sector each); nothing here does I/O, and
// nothing indexes past the buffer it was given.

/** ISO 9660 logical sector size. */
export const SECTOR = 2048;
/** The El Torito boot record volume descriptor's fixed place. */
export const BOOT_RECORD_SECTOR = 17;

export const PLATFORM_BIOS = 0x00;
export const PLATFORM_EFI = 0xef;

const ENTRY = 32;
const BOOTABLE = 0x88;
const SECTION_HEADER = 0x90;
const FINAL_SECTION_HEADER = 0x91;
const EXTENSION = 0x44;
const SYSTEM_ID = "EL TORITO SPECIFICATION";

const NAMES: Record<number, string> = {
  0x00: "x86 BIOS",
  0x01: "PowerPC",
  0x02: "Mac",
  0xef: "EFI",
};

/** "x86 BIOS", "EFI", … or the number in hex for a platform the spec does not name. */
export function platformName(id: number): string {
  return NAMES[id] ?? `platform 0x${id.toString(16).padStart(2, "0")}`;
}

/** The platform a VM firmware boots CD media for. */
export function firmwarePlatform(firmware: "bios" | "efi"): number {
  return firmware === "efi" ? PLATFORM_EFI : PLATFORM_BIOS;
}

/**
 * The boot catalog's sector from the boot record volume descriptor (sector 17's bytes);
 * undefined when the sector is not an El Torito boot record.
 */
export function bootCatalogSector(descriptor: Uint8Array): number | undefined {
  if (descriptor.length < 0x4b) return undefined;
  // Type 0 (boot record), "CD001", version 1, then the boot system identifier (zero-padded).
  if (descriptor[0] !== 0 || ascii(descriptor, 1, 5) !== "CD001" || descriptor[6] !== 1)
    return undefined;
  if (ascii(descriptor, 7, SYSTEM_ID.length) !== SYSTEM_ID) return undefined;
  const sector = new DataView(descriptor.buffer, descriptor.byteOffset).getUint32(0x47, true);
  // Sectors 0-17 are the system area and the descriptors themselves.
  return sector > BOOT_RECORD_SECTOR ? sector : undefined;
}

export class BootCatalogInvalid extends Error {
  override name = "BootCatalogInvalid";
}

/**
 * The platforms the boot catalog has a bootable entry for, in catalog order without repeats.
 * Throws BootCatalogInvalid when the validation entry is missing or fails its checksum; a
 * catalog cut short by the buffer yields what its complete entries say.
 */
export function bootPlatforms(catalog: Uint8Array): number[] {
  if (catalog.length < 2 * ENTRY) throw new BootCatalogInvalid("the boot catalog is truncated");
  const view = new DataView(catalog.buffer, catalog.byteOffset, catalog.length);
  if (catalog[0] !== 0x01 || catalog[30] !== 0x55 || catalog[31] !== 0xaa)
    throw new BootCatalogInvalid("the boot catalog has no validation entry");
  let sum = 0;
  for (let i = 0; i < ENTRY; i += 2) sum = (sum + view.getUint16(i, true)) & 0xffff;
  if (sum !== 0) throw new BootCatalogInvalid("the boot catalog's validation entry checksum fails");

  const found: number[] = [];
  const add = (platform: number) => {
    if (!found.includes(platform)) found.push(platform);
  };
  // The initial/default entry boots on the validation entry's platform.
  if (catalog[ENTRY] === BOOTABLE) add(catalog[1]!);

  let at = 2 * ENTRY;
  while (at + ENTRY <= catalog.length) {
    const header = catalog[at]!;
    if (header !== SECTION_HEADER && header !== FINAL_SECTION_HEADER) break;
    const platform = catalog[at + 1]!;
    let entries = view.getUint16(at + 2, true);
    at += ENTRY;
    while (entries > 0 && at + ENTRY <= catalog.length) {
      if (catalog[at] === BOOTABLE) add(platform);
      at += ENTRY;
      entries--;
      // Extension entries continue the entry before them; they are not counted.
      while (at + ENTRY <= catalog.length && catalog[at] === EXTENSION) at += ENTRY;
    }
    if (header === FINAL_SECTION_HEADER) break;
  }
  return found;
}

function ascii(bytes: Uint8Array, start: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(start, start + length));
}
