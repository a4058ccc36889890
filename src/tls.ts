// Node's error codes for a peer certificate that does not verify against the CA bundle given:
// one list for every client (vCenter, the broker), so a wrong caBundle reads alike everywhere.
const CERT_VERIFY_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_SIGNATURE_FAILURE",
]);

export function isCertVerifyCode(code: string | undefined): boolean {
  return code !== undefined && CERT_VERIFY_CODES.has(code);
}
