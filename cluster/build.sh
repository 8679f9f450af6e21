#!/usr/bin/env bash
# Build every binary of the local cluster from upstream Go modules (cluster/modules/*) and
# print the directory that holds them. The result is cached under a key made of everything
# that goes into it (versions, modules, this script, the Go version), so a second run prints
# the same directory at once; a changed input builds into a new one.
#
#   cluster/build.sh            build if needed, print the bin directory on stdout
#   cluster/build.sh --key      print the cache key only
#
# Cold, on 2 cores, this takes a long while (Kubernetes and KEDA are large): every step says
# what it builds and how long it has been at it, and a failed step names its log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

# LOCALKUBE_CACHE: where built binaries are kept (not BGWORKER_*: that prefix is bgworker's own).
cache_root="${LOCALKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgworker-localkube}"

command -v go >/dev/null || { echo "cluster/build.sh: needs Go >= 1.26 on PATH (https://go.dev/doc/install)" >&2; exit 1; }
command -v gcc >/dev/null || { echo "cluster/build.sh: needs gcc (apt-get install gcc libc6-dev) for the pause binary" >&2; exit 1; }

key=$(
  {
    go version
    cat "$here/versions.env" "$here/build.sh" "$here/pause.c"
    find "$here/modules" -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
)
if [ "${1:-}" = --key ]; then echo "$key"; exit 0; fi
out="$cache_root/bin-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi

# The modules must pin what versions.env says (one source of truth for the launcher's figures).
check_pin() {  # module-dir module version
  grep -qE "^\s*(require )?$2 $3( |$)" "$here/modules/$1/go.mod" \
    || { echo "cluster/build.sh: modules/$1/go.mod does not require $2 $3 (versions.env)" >&2; exit 1; }
}
check_pin kube k8s.io/kubernetes "$KUBERNETES_VERSION"
check_pin kube go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin kube helm.sh/helm/v3 "$HELM_VERSION"
check_pin keda github.com/kedacore/keda/v2 "$KEDA_VERSION"
check_pin coredns github.com/coredns/coredns "$COREDNS_VERSION"

mkdir -p "$cache_root"
work="$cache_root/building-$key.$$"
logs="$cache_root/logs-$key"
rm -rf "$work"
mkdir -p "$work" "$logs"
trap 'rm -rf "$work"' EXIT

start=$SECONDS
elapsed() { local s=$((SECONDS - ${1:-$start})); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
say() { echo "cluster/build.sh [$(elapsed)] $*" >&2; }

# One step: run "$@" with its output in a log, a line every minute while it runs, and the
# log's tail and path when it fails.
step() {  # name command...
  local name=$1 log="$logs/$1.log" began=$SECONDS pid
  shift
  say "building $name (log: $log)"
  "$@" >"$log" 2>&1 &
  pid=$!
  while ! wait_for "$pid" 60; do say "  still building $name ($(elapsed "$began"))"; done
  if ! wait "$pid"; then
    tail -n 30 "$log" >&2
    say "FAILED building $name: see $log"
    exit 1
  fi
  say "  built $name in $(elapsed "$began")"
}
wait_for() {  # pid seconds: true once the process has ended
  local i
  for ((i = 0; i < $2; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 1; done
  ! kill -0 "$1" 2>/dev/null
}

export CGO_ENABLED=0 GOFLAGS=-mod=mod
gobuild() {  # module-dir output package [ldflags]
  (cd "$here/modules/$1" && go build -trimpath -ldflags "-s -w ${4:-}" -o "$work/$2" "$3")
}

# Kubernetes and client-go report these at /version (Helm's kubeVersion checks and KEDA read
# it); without them it says v0.0.0-master.
minor=${KUBERNETES_VERSION#v*.}; minor=${minor%%.*}
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

step kube-apiserver gobuild kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
step kube-controller-manager gobuild kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
step kube-scheduler gobuild kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$kube_ldflags"
step kubelet gobuild kube kubelet k8s.io/kubernetes/cmd/kubelet "$kube_ldflags"
step kube-proxy gobuild kube kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$kube_ldflags"
step kubectl gobuild kube kubectl k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
step etcd gobuild kube etcd go.etcd.io/etcd/server/v3
# The Kubernetes version `helm template` and `helm lint` assume without a cluster (Helm's
# Makefile sets it from its k8s.io modules; unset, it is 1.20 and kubeVersion checks fail).
helm_kube=""
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_kube+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
done
step helm gobuild kube helm helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean $helm_kube"
keda_ldflags="-X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v} -X github.com/kedacore/keda/v2/version.GitCommit=$KEDA_VERSION"
step keda-operator gobuild keda keda-operator github.com/kedacore/keda/v2/cmd/operator "$keda_ldflags"
step keda-adapter gobuild keda keda-adapter github.com/kedacore/keda/v2/cmd/adapter "$keda_ldflags"
step coredns gobuild coredns coredns .
step provisioner gobuild provisioner provisioner .
step pause gcc -Os -static -o "$work/pause" "$here/pause.c"

# KEDA's own manifests (CRDs, RBAC, operator and metrics server), from the module just built.
keda_src="$(cd "$here/modules/keda" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"
mkdir -p "$work/keda"
cp -r "$keda_src/config/." "$work/keda/"
chmod -R u+w "$work/keda"

echo "$SECONDS" > "$work/build-seconds"   # the cold build's duration (docs/performance.md)
rm -rf "$out"
mv "$work" "$out"
touch "$out/.complete"
say "all built in $out"
echo "$out"
