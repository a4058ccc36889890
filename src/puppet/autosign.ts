// vsop's answer to the Puppet master's policy-based autosign: sign a CSR only when it comes from a
// server vsop installs, carries that server's one-time challenge (not yet spent), and asks for
// exactly the trusted facts vsop gave it. Everything else stays unsigned, with a reason for the
// log and the metric (never the challenge itself).
import { CsrError, parseCsr, type CertificateRequest } from "./csr.js";
import { challengeMatches, factsByOid } from "./trusted-facts.js";

/** Why a CSR is refused; also the `reason` label of vsop_puppet_autosign_total. */
export type RefusalReason =
  | "MalformedRequest"
  | "BadSignature"
  | "NameMismatch"
  | "UnknownName"
  | "NoChallengeIssued"
  | "NoChallenge"
  | "WrongChallenge"
  | "ChallengeSpent"
  | "ExtensionMismatch";

/** A server that may own the certname: what its install record says about its challenge. */
export interface AutosignCandidate<T> {
  /** Whatever the caller needs back to spend the challenge (the install record). */
  ref: T;
  /** "namespace/name", for the log. */
  virtualserver: string;
  challengeHash?: string;
  challengeSpentAt?: string;
  /** The trusted facts the server was told to ask for, by name (pp_role, ...). */
  facts: Record<string, string>;
}

export type AutosignVerdict<T> =
  | { sign: true; candidate: AutosignCandidate<T> }
  | { sign: false; reason: RefusalReason; message: string; virtualserver?: string };

const refuse = <T>(
  reason: RefusalReason,
  message: string,
  virtualserver?: string,
): AutosignVerdict<T> => ({ sign: false, reason, message, virtualserver });

/**
 * Decides on one CSR. `candidates`: the VirtualServers (not being deleted) whose hostname is the
 * certname. The caller spends the challenge before answering "sign", so a replay loses.
 */
export function decideAutosign<T>(
  certname: string,
  csrPem: string,
  candidates: AutosignCandidate<T>[],
): AutosignVerdict<T> {
  let csr: CertificateRequest;
  try {
    csr = parseCsr(csrPem);
  } catch (err) {
    const why = err instanceof CsrError ? err.message : "unreadable";
    return refuse("MalformedRequest", `the CSR cannot be read (${why})`);
  }
  if (!csr.signatureValid)
    return refuse("BadSignature", "the CSR is not signed by the key it carries");
  if (csr.commonName !== certname)
    return refuse("NameMismatch", "the CSR's common name is not the certname it was sent for");
  if (candidates.length === 0)
    return refuse("UnknownName", "no VirtualServer has this hostname (or it is being deleted)");
  if (csr.challengePassword === undefined)
    return refuse("NoChallenge", "the CSR carries no challengePassword");

  const issued = candidates.filter((c) => c.challengeHash);
  if (issued.length === 0)
    return refuse(
      "NoChallengeIssued",
      "vsop handed this server no challenge (its install keys were not fetched, or it was not installed by vsop)",
      candidates[0]!.virtualserver,
    );
  const match = issued.find((c) => challengeMatches(csr.challengePassword!, c.challengeHash!));
  if (!match)
    return refuse(
      "WrongChallenge",
      "the CSR's challenge is not the one vsop handed this server",
      issued[0]!.virtualserver,
    );
  if (match.challengeSpentAt)
    return refuse(
      "ChallengeSpent",
      `the challenge was spent at ${match.challengeSpentAt}; a reinstall gets a new one`,
      match.virtualserver,
    );

  const want = factsByOid(match.facts);
  const got = csr.extensions;
  const wrong = [...want].filter(([oid, value]) => got.get(oid) !== value).map(([oid]) => oid);
  const extra = [...got.keys()].filter((oid) => !want.has(oid));
  if (wrong.length || extra.length) {
    const names = Object.fromEntries(
      Object.keys(match.facts).map((n) => [[...factsByOid({ [n]: "" }).keys()][0]!, n]),
    );
    const list = (oids: string[]) => oids.map((o) => names[o] ?? o).join(", ");
    return refuse(
      "ExtensionMismatch",
      [
        wrong.length ? `missing or different trusted facts: ${list(wrong)}` : "",
        extra.length ? `extensions vsop did not give it: ${list(extra)}` : "",
      ]
        .filter(Boolean)
        .join("; "),
      match.virtualserver,
    );
  }
  return { sign: true, candidate: match };
}
