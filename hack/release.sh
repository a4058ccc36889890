#!/usr/bin/env bash
# make release: what a user installs vsop from, without this repository's tooling.
#   dist/release/install.yaml     everything `kubectl apply -k deploy/` installs, in one file
#   dist/release/vsop-<v>.tgz     the Helm chart deploy/helm/vsop, linted and packaged
# (VSOP_RELEASE_DIR names another folder than dist/release).
# crds/ is the one source of the CRDs: the chart's crds/ folder gets fresh copies first
# (test/unit/helm.test.ts fails when they differ). `hack/release.sh --crds` only copies them.
source "$(dirname "$0")/lib.sh"
PART=release

CHART="$ROOT/deploy/helm/vsop"
OUT="${VSOP_RELEASE_DIR:-$ROOT/dist/release}"
CRD_HEADER="# Copied from crds/ by make release (hack/release.sh): edit that file, not this one."

for crd in "$ROOT"/crds/*.provisioning.vsop.dev.yaml; do
  dest="$CHART/crds/$(basename "$crd")"
  { echo "$CRD_HEADER"; cat "$crd"; } >"$dest.tmp"
  if cmp -s "$dest.tmp" "$dest"; then rm "$dest.tmp"; else
    mv "$dest.tmp" "$dest"
    log "updated ${dest#"$ROOT"/}"
  fi
done
for copy in "$CHART"/crds/*.yaml; do
  [ -f "$ROOT/crds/$(basename "$copy")" ] || { rm "$copy" && log "removed ${copy#"$ROOT"/} (gone from crds/)"; }
done
[ "${1:-}" = "--crds" ] && exit 0

HELM_VERSION="$(sed -n 's/^HELM_VERSION="\(.*\)"/\1/p' "$ROOT/hack/install.sh")"
HELM="${HELM:-$CACHE/helm-$HELM_VERSION}"
[ -x "$HELM" ] || die "helm $HELM_VERSION is missing at $HELM; run make install"
command -v kubectl >/dev/null || die "kubectl is needed to render deploy/ (kubectl kustomize)"

mkdir -p "$OUT"
kubectl kustomize "$ROOT/deploy" >"$OUT/install.yaml.tmp" 2>"$OUT/kustomize.log" ||
  fail_part kustomize "$OUT/kustomize.log" "could not render deploy/"
mv "$OUT/install.yaml.tmp" "$OUT/install.yaml"
rm -f "$OUT/kustomize.log"

"$HELM" lint --strict "$CHART" >"$OUT/helm-lint.log" 2>&1 ||
  fail_part helm-lint "$OUT/helm-lint.log" "the chart does not lint"
rm -f "$OUT"/vsop-*.tgz
"$HELM" package "$CHART" --destination "$OUT" >"$OUT/helm-package.log" 2>&1 ||
  fail_part helm-package "$OUT/helm-package.log" "could not package the chart"
rm -f "$OUT/helm-lint.log" "$OUT/helm-package.log"

log "wrote ${OUT#"$ROOT"/}/install.yaml and ${OUT#"$ROOT"/}/$(basename "$OUT"/vsop-*.tgz)"
