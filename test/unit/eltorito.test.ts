// The El Torito reader that decides whether an installer image boots under a class's firmware:
// hand-built boot records and catalogs (BIOS only, hybrid BIOS+EFI, EFI only, entries marked not
// bootable, extension entries), and garbage, truncated or lying input that must neither throw
// anything but BootCatalogInvalid nor read past the buffer.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  BootCatalogInvalid,
  bootCatalogSector,
  bootPlatforms,
  firmwarePlatform,
  platformName,
  PLATFORM_BIOS,
  PLATFORM_EFI,
  SECTOR,
} from "../../src/provision/eltorito.js";

/** Sector 17 as mkisofs/xorriso write it, pointing at `catalog`. */
function bootRecord(catalog: number, over: Partial<{ id: string; type: number }> = {}): Buffer {
  const b = Buffer.alloc(SECTOR);
  b[0] = over.type ?? 0;
  b.write("CD001", 1, "ascii");
  b[6] = 1;
  b.write(over.id ?? "EL TORITO SPECIFICATION", 7, "ascii");
  b.writeUInt32LE(catalog, 0x47);
  return b;
}

/** A 32-byte validation entry for `platform` with a correct checksum. */
function validation(platform: number): Buffer {
  const e = Buffer.alloc(32);
  e[0] = 0x01;
  e[1] = platform;
  e.write("vsop test", 4, "ascii");
  e[30] = 0x55;
  e[31] = 0xaa;
  let sum = 0;
  for (let i = 0; i < 32; i += 2) sum = (sum + e.readUInt16LE(i)) & 0xffff;
  e.writeUInt16LE((0x10000 - sum) & 0xffff, 28);
  return e;
}

const entry = (bootable: boolean) => {
  const e = Buffer.alloc(32);
  e[0] = bootable ? 0x88 : 0x00;
  e.writeUInt16LE(4, 6); // sector count
  e.writeUInt32LE(40, 8); // load RBA
  return e;
};

const header = (final: boolean, platform: number, count: number) => {
  const e = Buffer.alloc(32);
  e[0] = final ? 0x91 : 0x90;
  e[1] = platform;
  e.writeUInt16LE(count, 2);
  return e;
};

const extension = () => {
  const e = Buffer.alloc(32);
  e[0] = 0x44;
  return e;
};

/** Entries padded to a whole sector, as the catalog sector is read. */
const catalog = (...entries: Buffer[]) => {
  const b = Buffer.concat(entries);
  return Buffer.concat([b, Buffer.alloc(Math.max(0, SECTOR - b.length))]);
};

test("boot record: the catalog sector of a real El Torito descriptor, nothing for anything else", () => {
  const cases: [string, Buffer, number | undefined][] = [
    ["xorriso-style record", bootRecord(33), 33],
    ["catalog far into the image", bootRecord(0x00123456), 0x00123456],
    ["a primary volume descriptor (type 1)", bootRecord(33, { type: 1 }), undefined],
    ["another boot system", bootRecord(33, { id: "SOME OTHER SYSTEM" }), undefined],
    ["catalog inside the system area", bootRecord(5), undefined],
    ["catalog pointing at the descriptor itself", bootRecord(17), undefined],
    ["zeros (no boot record)", Buffer.alloc(SECTOR), undefined],
    [
      "random bytes",
      Buffer.from(Array.from({ length: SECTOR }, (_, i) => (i * 37) & 0xff)),
      undefined,
    ],
    ["empty read (file shorter than 18 sectors)", Buffer.alloc(0), undefined],
    ["cut before the pointer", bootRecord(33).subarray(0, 0x49), undefined],
  ];
  for (const [what, bytes, want] of cases) assert.equal(bootCatalogSector(bytes), want, what);
  // Exactly up to the pointer is enough.
  assert.equal(bootCatalogSector(bootRecord(33).subarray(0, 0x4b)), 33);
  // A view into a larger buffer reads its own bytes.
  const big = Buffer.concat([Buffer.alloc(100, 0xff), bootRecord(40)]);
  assert.equal(bootCatalogSector(big.subarray(100)), 40);
});

test("boot catalog: the platforms with a bootable entry", () => {
  const cases: [string, Buffer, number[]][] = [
    ["BIOS only (-b)", catalog(validation(PLATFORM_BIOS), entry(true)), [PLATFORM_BIOS]],
    [
      "hybrid: BIOS default, EFI section (-b … -eltorito-alt-boot -e)",
      catalog(validation(0), entry(true), header(true, PLATFORM_EFI, 1), entry(true)),
      [PLATFORM_BIOS, PLATFORM_EFI],
    ],
    ["EFI only (-e)", catalog(validation(PLATFORM_EFI), entry(true)), [PLATFORM_EFI]],
    [
      "default entry not bootable, EFI section",
      catalog(validation(0), entry(false), header(true, PLATFORM_EFI, 1), entry(true)),
      [PLATFORM_EFI],
    ],
    [
      "an EFI section whose entries are not bootable",
      catalog(
        validation(0),
        entry(true),
        header(true, PLATFORM_EFI, 2),
        entry(false),
        entry(false),
      ),
      [PLATFORM_BIOS],
    ],
    [
      "two sections, extension entries skipped, repeats once",
      catalog(
        validation(0),
        entry(true),
        header(false, 0x00, 1),
        entry(true),
        extension(),
        extension(),
        header(true, PLATFORM_EFI, 2),
        entry(false),
        extension(),
        entry(true),
      ),
      [PLATFORM_BIOS, PLATFORM_EFI],
    ],
    [
      "nothing after a final header is read",
      catalog(
        validation(0),
        entry(true),
        header(true, 0x01, 1),
        entry(true),
        header(true, PLATFORM_EFI, 1),
        entry(true),
      ),
      [PLATFORM_BIOS, 0x01],
    ],
    ["nothing bootable", catalog(validation(0), entry(false)), []],
  ];
  for (const [what, bytes, want] of cases) assert.deepEqual(bootPlatforms(bytes), want, what);
});

test("boot catalog: truncated input yields what its complete entries say, never reads past it", () => {
  const full = catalog(validation(0), entry(true), header(true, PLATFORM_EFI, 1), entry(true));
  const cases: [number, number[]][] = [
    [64, [PLATFORM_BIOS]], // validation and default only
    [96, [PLATFORM_BIOS]], // the header without its entry
    [127, [PLATFORM_BIOS]], // the EFI entry one byte short
    [128, [PLATFORM_BIOS, PLATFORM_EFI]],
  ];
  for (const [length, want] of cases)
    assert.deepEqual(bootPlatforms(full.subarray(0, length)), want, `${length} bytes`);
  // A header that claims 65535 entries in a one-sector catalog stops at the sector's end.
  const lying = catalog(
    validation(0),
    entry(false),
    header(true, PLATFORM_EFI, 0xffff),
    entry(false),
  );
  assert.deepEqual(bootPlatforms(lying), []);
  const allEntries = Buffer.concat([
    validation(0),
    entry(false),
    header(true, PLATFORM_EFI, 0xffff),
    ...Array.from({ length: 61 }, () => entry(true)),
  ]);
  assert.equal(allEntries.length, SECTOR);
  assert.deepEqual(bootPlatforms(allEntries), [PLATFORM_EFI]);
});

test("boot catalog: no validation entry, a bad checksum or too few bytes → BootCatalogInvalid", () => {
  const badSum = validation(0);
  badSum[4] ^= 0xff;
  const noKey = validation(0);
  noKey[31] = 0;
  const cases: [string, Buffer][] = [
    ["zeros", Buffer.alloc(SECTOR)],
    ["random bytes", Buffer.from(Array.from({ length: SECTOR }, (_, i) => (i * 91 + 7) & 0xff))],
    ["checksum fails", catalog(badSum, entry(true))],
    ["no 55 AA key", catalog(noKey, entry(true))],
    ["empty", Buffer.alloc(0)],
    ["validation entry only", validation(0)],
    ["one byte short of the default entry", catalog(validation(0), entry(true)).subarray(0, 63)],
  ];
  for (const [what, bytes] of cases)
    assert.throws(() => bootPlatforms(bytes), BootCatalogInvalid, what);
});

test("platform names and the platform each firmware boots", () => {
  assert.equal(platformName(PLATFORM_BIOS), "x86 BIOS");
  assert.equal(platformName(PLATFORM_EFI), "EFI");
  assert.equal(platformName(0x01), "PowerPC");
  assert.equal(platformName(0x7), "platform 0x07");
  assert.equal(firmwarePlatform("bios"), PLATFORM_BIOS);
  assert.equal(firmwarePlatform("efi"), PLATFORM_EFI);
});
