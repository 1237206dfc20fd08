#!/usr/bin/env bash
# What the GitOps health tests run: Debian's Lua 5.1 with lua-cjson (the Argo CD health check
# is Lua 5.1, as gopher-lua runs it), and kstatus built from sigs.k8s.io/cli-utils (hack/kstatus,
# go.sum pinned) into .cache/tools. Prints nothing when both are there.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(lua5.1 lua-cjson)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing ${missing[*]} (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
fi
out=.cache/tools/kstatus
if [[ ! -x "$out" || hack/kstatus/main.go -nt "$out" || hack/kstatus/go.sum -nt "$out" ]]; then
  echo "building kstatus (sigs.k8s.io/cli-utils) into $out" >&2
  mkdir -p .cache/tools
  (cd hack/kstatus && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "../../$out" .) >&2
fi
