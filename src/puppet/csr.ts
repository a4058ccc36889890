// A PKCS#10 certificate signing request, read far enough to decide on it: the subject's common
// name, the challengePassword attribute, the requested extensions (Puppet's trusted facts), and
// whether the request is signed by the key it carries. A CSR comes from the network (through the
// master's autosign command): it is bounded in size and depth and anything unexpected is refused.
import { createPublicKey, verify } from "node:crypto";

export class CsrError extends Error {
  override name = "CsrError";
}

/** Larger CSRs are refused unread (Puppet's are 1-2 KiB; 16 KiB leaves room for big keys). */
export const MAX_CSR_BYTES = 16 * 1024;
const MAX_DEPTH = 12;

const OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7";
const OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14";
const OID_COMMON_NAME = "2.5.4.3";

/** Signature algorithms a CSR may use, with the digest node:crypto verifies them with. */
const SIGNATURE_DIGESTS: Record<string, string> = {
  "1.2.840.113549.1.1.11": "sha256", // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.2.840.10045.4.3.2": "sha256", // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
};

export interface CertificateRequest {
  commonName: string;
  /** Undefined when the CSR carries none. */
  challengePassword?: string;
  /** Requested extensions by OID, values decoded from their DER string. */
  extensions: Map<string, string>;
  /** Whether the CSR's signature verifies with its own public key. */
  signatureValid: boolean;
}

interface Node {
  tag: number;
  /** The whole TLV. */
  raw: Buffer;
  /** The value bytes. */
  value: Buffer;
}

/** Reads one TLV at `offset`; definite lengths only (DER). */
function readNode(buf: Buffer, offset: number): { node: Node; next: number } {
  if (offset + 2 > buf.length) throw new CsrError("truncated DER");
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new CsrError("multi-byte DER tags are not expected here");
  let length = buf[offset + 1]!;
  let header = 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    if (n === 0 || n > 3) throw new CsrError("unsupported DER length");
    if (offset + 2 + n > buf.length) throw new CsrError("truncated DER");
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + buf[offset + 2 + i]!;
    header += n;
  }
  const end = offset + header + length;
  if (end > buf.length) throw new CsrError("truncated DER");
  return {
    node: { tag, raw: buf.subarray(offset, end), value: buf.subarray(offset + header, end) },
    next: end,
  };
}

/** The children of a constructed node. */
function children(node: Node, depth: number): Node[] {
  if (depth > MAX_DEPTH) throw new CsrError("DER nested too deeply");
  if (!(node.tag & 0x20)) throw new CsrError("expected a constructed DER value");
  const out: Node[] = [];
  for (let off = 0; off < node.value.length;) {
    const { node: child, next } = readNode(node.value, off);
    out.push(child);
    off = next;
    if (out.length > 256) throw new CsrError("too many DER elements");
  }
  return out;
}

function expect(node: Node | undefined, tag: number, what: string): Node {
  if (!node || node.tag !== tag) throw new CsrError(`malformed CSR: ${what}`);
  return node;
}

function oid(node: Node): string {
  const v = expect(node, 0x06, "object identifier").value;
  if (v.length === 0 || v.length > 64) throw new CsrError("malformed object identifier");
  const parts: number[] = [];
  let n = 0;
  for (const byte of v) {
    n = n * 128 + (byte & 0x7f);
    if (n > Number.MAX_SAFE_INTEGER / 128) throw new CsrError("object identifier too large");
    if (!(byte & 0x80)) {
      parts.push(n);
      n = 0;
    }
  }
  const first = parts.shift()!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...parts].join(".");
}

/** A DER string value: UTF8String, PrintableString, IA5String or T61String. */
function string(node: Node): string {
  switch (node.tag) {
    case 0x0c: // UTF8String
      return node.value.toString("utf8");
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x14: // T61String (Latin-1 in practice)
      return node.value.toString("latin1");
    default:
      throw new CsrError(`unexpected string type 0x${node.tag.toString(16)}`);
  }
}

/** The DER bytes of the first CERTIFICATE REQUEST block of a PEM text. */
export function pemToDer(pem: string): Buffer {
  const m =
    /-----BEGIN (NEW )?CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]+)-----END (NEW )?CERTIFICATE REQUEST-----/.exec(
      pem,
    );
  if (!m) throw new CsrError("not a PEM certificate request");
  return Buffer.from(m[2]!.replace(/\s+/g, ""), "base64");
}

/** Parses a CSR (PEM or DER). Throws CsrError for anything that is not a well-formed PKCS#10. */
export function parseCsr(input: string | Buffer): CertificateRequest {
  const der = typeof input === "string" ? pemToDer(input) : input;
  if (der.length > MAX_CSR_BYTES) throw new CsrError("CSR too large");
  const { node: top, next } = readNode(der, 0);
  if (next !== der.length) throw new CsrError("trailing bytes after the CSR");
  const [info, algorithm, signature] = children(expect(top, 0x30, "request"), 1);
  const infoParts = children(expect(info, 0x30, "request info"), 2);
  const [version, subject, spki, attributes] = infoParts;
  expect(version, 0x02, "version");
  const commonName = subjectCommonName(expect(subject, 0x30, "subject"));
  expect(spki, 0x30, "public key");

  let challengePassword: string | undefined;
  const extensions = new Map<string, string>();
  if (attributes) {
    for (const attr of children(expect(attributes, 0xa0, "attributes"), 3)) {
      const [type, values] = children(expect(attr, 0x30, "attribute"), 4);
      const set = children(expect(values, 0x31, "attribute values"), 5);
      const id = oid(type!);
      if (id === OID_CHALLENGE_PASSWORD) {
        if (set.length !== 1 || challengePassword !== undefined)
          throw new CsrError("more than one challengePassword");
        challengePassword = string(set[0]!);
      } else if (id === OID_EXTENSION_REQUEST) {
        for (const exts of set)
          for (const ext of children(expect(exts, 0x30, "extensions"), 6)) {
            const parts = children(expect(ext, 0x30, "extension"), 7);
            const extId = oid(parts[0]!);
            const octets = expect(parts[parts.length - 1], 0x04, "extension value");
            if (extensions.has(extId)) throw new CsrError(`extension ${extId} requested twice`);
            extensions.set(extId, extensionValue(octets.value));
          }
      }
    }
  }

  const algId = oid(children(expect(algorithm, 0x30, "signature algorithm"), 2)[0]!);
  const bits = expect(signature, 0x03, "signature").value;
  const digest = SIGNATURE_DIGESTS[algId];
  let signatureValid = false;
  if (digest && bits.length > 1 && bits[0] === 0) {
    try {
      const key = createPublicKey({ key: spki!.raw, format: "der", type: "spki" });
      signatureValid = verify(digest, info!.raw, key, bits.subarray(1));
    } catch {
      signatureValid = false;
    }
  }
  return { commonName, challengePassword, extensions, signatureValid };
}

/** The subject's CN (exactly one). */
function subjectCommonName(subject: Node): string {
  const names: string[] = [];
  for (const rdn of children(subject, 3))
    for (const atv of children(expect(rdn, 0x31, "subject name"), 4)) {
      const [type, value] = children(expect(atv, 0x30, "subject attribute"), 5);
      if (oid(type!) === OID_COMMON_NAME) names.push(string(value!));
    }
  if (names.length !== 1) throw new CsrError("the subject must have exactly one common name");
  return names[0]!;
}

/** An extension's value: Puppet wraps trusted facts as a DER string inside the OCTET STRING. */
function extensionValue(octets: Buffer): string {
  try {
    const { node, next } = readNode(octets, 0);
    if (next === octets.length) return string(node);
  } catch {
    // not a DER string: kept as hex below, which matches no expected value
  }
  return `hex:${octets.toString("hex")}`;
}
