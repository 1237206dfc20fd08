#!/usr/bin/env bash
# Debian packages the real node and the images need (installed once; a fresh machine has none):
# dockerd (docker.io), a containerd of the node's own, runc, the CNI plugins, debootstrap for the
# base image, iptables and iproute2. Prints nothing when all are there.
set -euo pipefail
pkgs=(docker.io containerd runc containernetworking-plugins debootstrap iptables iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing ${missing[*]} (apt)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
  || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
