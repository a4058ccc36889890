// The boot method a class asks for.
import { bootMethod } from "../../api/defaults.js";
import type { VirtualServerClass } from "../../api/types.js";
import type { BootMethod } from "./boot-method.js";
import { guestinfoBoot } from "./guestinfo.js";
import { isoBoot } from "./iso.js";
import { networkBoot } from "./network.js";

export type { BootMethod } from "./boot-method.js";

const METHODS = { network: networkBoot, iso: isoBoot, guestinfo: guestinfoBoot } as const;

export const bootMethodOf = (cls: VirtualServerClass): BootMethod => METHODS[bootMethod(cls.spec)];
