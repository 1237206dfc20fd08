#!/usr/bin/env bash
# Build the local control plane's binaries from their Go modules at pinned versions, once:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and for the real node kubelet
# and kube-proxy (k8s.io/kubernetes), etcd, kwok, helm, CoreDNS and crictl. Binaries land in $HADIS_BIN_CACHE (default ~/.cache/hadis/bin/<versions>)
# and are reused until a version below changes.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"

STAGING_VERSION="v0${K8S_VERSION#v1}"   # k8s.io/kubernetes v1.34.2 -> staging modules v0.34.2
BUILD_REV=2   # bump when the build itself changes (r2: Kubernetes binaries report their version)
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_r${BUILD_REV}"
OUT="${HADIS_BIN_CACHE:-$HOME/.cache/hadis/bin/$KEY}"
WORK="${HADIS_BUILD_DIR:-$HOME/.cache/hadis/build}"
mkdir -p "$OUT" "$WORK"
export GOFLAGS="${GOFLAGS:--mod=mod}" CGO_ENABLED=0

# Usage: build-control-plane.sh [BINARY...]   (default: all of them); prints the folder.
if [[ $# -gt 0 ]]; then need=("$@"); else
  need=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok kubectl helm kubelet kube-proxy coredns crictl)
fi
wants() { local b; for b in "${need[@]}"; do [[ "$b" == "$1" ]] && return 0; done; return 1; }
missing=()
for b in "${need[@]}"; do [[ -x "$OUT/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$OUT"
  exit 0
fi
echo "building ${missing[*]} into $OUT (first time only; several minutes)" >&2

build_module() {  # dir, module@version, packages...
  local dir="$1" mod="$2"; shift 2
  mkdir -p "$dir"
  (
    cd "$dir"
    [[ -f go.mod ]] || go mod init hadis.local/build >/dev/null 2>&1
    go get "$mod" >&2
    for pkg in "$@"; do
      echo "  go build $pkg" >&2
      go build -trimpath -ldflags="-s -w" -o "$OUT/$(basename "$pkg")" "$pkg"
    done
  )
}

# k8s.io/kubernetes as a dependency: pin every k8s.io staging module to the matching v0.x.y.
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
if printf '%s\n' "${missing[@]}" | grep -qxF -f <(printf '%s\n' "${k8s_cmds[@]}"); then
  dir="$WORK/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  (
    cd "$dir"
    [[ -f go.mod ]] || go mod init hadis.local/k8s >/dev/null 2>&1
    src="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
    for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$src/go.mod"); do
      go mod edit -replace "$m=$m@$STAGING_VERSION"
    done
    go get "k8s.io/kubernetes@$K8S_VERSION" >&2
    # Stamp the version as the release build does; without it the API server reports
    # v0.0.0-master and tools that check the server version (helm's kubeVersion) refuse it.
    minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
    vflags=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      vflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      vflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for cmd in "${k8s_cmds[@]}"; do
      pkg="k8s.io/kubernetes/cmd/$cmd"
      [[ -x "$OUT/$cmd" ]] && continue
      wants "$cmd" || continue
      echo "  go build $pkg" >&2
      go build -trimpath -ldflags="-s -w $vflags" -o "$OUT/$(basename "$pkg")" "$pkg"
    done
  )
fi
if wants etcd && [[ ! -x "$OUT/etcd" ]]; then
  build_module "$WORK/etcd-$ETCD_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" go.etcd.io/etcd/server/v3
  mv "$OUT/v3" "$OUT/etcd"   # the module's root package is the etcd binary
fi
if wants kwok && [[ ! -x "$OUT/kwok" ]]; then
  build_module "$WORK/kwok-$KWOK_VERSION" "sigs.k8s.io/kwok@$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
fi
if wants helm && [[ ! -x "$OUT/helm" ]]; then
  build_module "$WORK/helm-$HELM_VERSION" "helm.sh/helm/v3@$HELM_VERSION" helm.sh/helm/v3/cmd/helm
fi
if wants coredns && [[ ! -x "$OUT/coredns" ]]; then
  build_module "$WORK/coredns-$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION" github.com/coredns/coredns
fi
if wants crictl && [[ ! -x "$OUT/crictl" ]]; then
  build_module "$WORK/cri-tools-$CRICTL_VERSION" "sigs.k8s.io/cri-tools@$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
fi
echo "$OUT"
