// vim25 SOAP encoding: plain TypeScript values <-> XML. Objects keep their key order, because
// vSphere expects elements in WSDL order; `_type` becomes xsi:type; MoRef becomes <x type="T">id</x>.
import { XMLParser } from "fast-xml-parser";

/** A ManagedObjectReference. */
export class MoRef {
  constructor(
    readonly type: string,
    readonly value: string,
  ) {}
  toString(): string {
    return `${this.type}:${this.value}`;
  }
}

/** An XML text value carrying an explicit xsi:type, e.g. an OptionValue's string value. */
export class TypedText {
  constructor(
    readonly xsiType: string,
    readonly text: string,
  ) {}
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Encodes one element (or, for arrays, one element per item). */
export function encode(name: string, value: unknown): string {
  if (value === undefined || value === null) return "";
  if (Array.isArray(value)) return value.map((v) => encode(name, v)).join("");
  if (value instanceof MoRef)
    return `<${name} type="${escapeXml(value.type)}">${escapeXml(value.value)}</${name}>`;
  if (value instanceof TypedText)
    return `<${name} xsi:type="${escapeXml(value.xsiType)}">${escapeXml(value.text)}</${name}>`;
  if (typeof value === "object") {
    const obj = value as Record<string, unknown>;
    const attr = typeof obj._type === "string" ? ` xsi:type="${escapeXml(obj._type)}"` : "";
    const children = Object.entries(obj)
      .filter(([k]) => k !== "_type")
      .map(([k, v]) => encode(k, v))
      .join("");
    return `<${name}${attr}>${children}</${name}>`;
  }
  return `<${name}>${escapeXml(String(value))}</${name}>`;
}

export function envelope(
  method: string,
  thisRef: MoRef,
  args: Record<string, unknown>,
  namespace = "urn:vim25",
): string {
  const body =
    encode("_this", thisRef) +
    Object.entries(args)
      .map(([k, v]) => encode(k, v))
      .join("");
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" ' +
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
    `<soapenv:Body><${method} xmlns="${namespace}">${body}</${method}></soapenv:Body></soapenv:Envelope>`
  );
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@",
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  transformTagName: (t) => t.replace(/^[^:]+:/, ""),
});

/** A decoded XML node: MoRef, string, array or object (with `_type` from xsi:type). */
export type Node = MoRef | string | Node[] | { [k: string]: Node };

// Go's encoding/xml (vcsim) writes xsi:type under its own prefix, e.g. XMLSchema-instance:type;
// a prefixed `type` attribute is the instance type whatever the prefix (MoRef's `type` has none).
function xsiTypeOf(obj: Record<string, unknown>): string | undefined {
  if (typeof obj["@xsi:type"] === "string") return obj["@xsi:type"];
  for (const [k, v] of Object.entries(obj))
    if (typeof v === "string" && /^@[^:]+:type$/.test(k)) return v;
  return undefined;
}

function convert(raw: unknown): Node {
  if (Array.isArray(raw)) return raw.map(convert);
  if (raw === null || typeof raw !== "object") return raw === undefined ? "" : String(raw);
  const obj = raw as Record<string, unknown>;
  const xsiType = xsiTypeOf(obj);
  const keys = Object.keys(obj).filter((k) => !k.startsWith("@") && k !== "#text");
  if (typeof obj["@type"] === "string" && keys.length === 0)
    return new MoRef(obj["@type"], String(obj["#text"] ?? ""));
  if (keys.length === 0 && "#text" in obj) return String(obj["#text"]);
  const out: { [k: string]: Node } = {};
  if (xsiType) out._type = xsiType.replace(/^[^:]+:/, "");
  for (const k of keys) out[k] = convert(obj[k]);
  return out;
}

export interface SoapFaultInfo {
  /** The vim25 fault type name, e.g. InvalidLogin, or "Unknown". */
  name: string;
  message: string;
  detail: Node;
}

export function decodeResponse(xml: string): { body?: Node; fault?: SoapFaultInfo } {
  const doc = parser.parse(xml) as Record<string, unknown>;
  const env = doc.Envelope as Record<string, unknown> | undefined;
  const body = (env?.Body ?? {}) as Record<string, unknown>;
  if (body.Fault) {
    const f = body.Fault as Record<string, unknown>;
    const detail = convert(f.detail ?? {}) as Record<string, Node>;
    const [elem] = Object.keys(detail);
    const inner = elem ? detail[elem] : undefined;
    const typed = inner && typeof inner === "object" && !Array.isArray(inner) ? inner : {};
    const name =
      (typed as Record<string, Node>)._type?.toString() ??
      (elem ? elem.replace(/Fault$/, "") : "Unknown");
    return { fault: { name, message: String(f.faultstring ?? ""), detail: inner ?? "" } };
  }
  const [responseName] = Object.keys(body);
  if (!responseName) return { body: "" };
  const response = convert(body[responseName]);
  if (typeof response === "object" && !Array.isArray(response) && !(response instanceof MoRef))
    return { body: response.returnval ?? "" };
  return { body: "" };
}

/** Treats a node that XML may have collapsed to one item as a list. */
export function list(node: Node | undefined): Node[] {
  if (node === undefined || node === "") return [];
  return Array.isArray(node) ? node : [node];
}

export function field(node: Node | undefined, name: string): Node | undefined {
  if (node && typeof node === "object" && !Array.isArray(node) && !(node instanceof MoRef))
    return node[name];
  return undefined;
}

export function text(node: Node | undefined): string | undefined {
  return typeof node === "string" ? node : undefined;
}
