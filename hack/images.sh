#!/usr/bin/env bash
# make images: the control and worker images (Dockerfile), built here where no registry is
# reachable. The base image is made with debootstrap from Debian's packages and tagged with the
# name the Dockerfile uses (debian:bookworm-slim), so a plain `docker build` elsewhere, with the
# public base, runs the same Dockerfile. pip reaches PyPI with this machine's CA bundle, passed
# as a build secret (it stays out of the images). A second build reuses the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER="${DOCKER:-/usr/bin/docker}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
BASE="${BASE_IMAGE:-debian:bookworm-slim}"
REPO="${IMAGE_REPOSITORY:-ghcr.io/hadis-serving}"
bash hack/dockerd.sh

if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  t0=$SECONDS
  root="$HOME/.cache/hadis/rootfs-bookworm"
  rm -rf "$root"
  echo "making $BASE with debootstrap (minbase, once) ..." >&2
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | "$DOCKER" import -c 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf "$root"
  echo "  $BASE in $((SECONDS - t0))s" >&2
fi

secret=()
[[ -s /etc/ssl/certs/ca-certificates.crt ]] && secret=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
for spec in control:hadis worker:hadis-worker; do
  target="${spec%%:*}" name="$REPO/${spec##*:}:$VERSION"
  t0=$SECONDS
  echo "building $name (target $target) ..." >&2
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --network host "${secret[@]}" --build-arg "BASE_IMAGE=$BASE" \
    --build-arg "VERSION=$VERSION" --target "$target" -t "$name" . >"$HOME/.cache/hadis/build-$target.log" 2>&1 \
    || { tail -40 "$HOME/.cache/hadis/build-$target.log" >&2; exit 1; }
  echo "  $name in $((SECONDS - t0))s" >&2
done
# Layers of earlier builds stay in BuildKit's cache, several GB per worker rebuild (20 GB seen
# here after a day's work): keep the most recently used 10 GB (the current layers; pip's cache
# mount is not a "regular" record and stays).
"$DOCKER" image prune -f --filter "label=org.opencontainers.image.vendor=hadis-serving" >/dev/null
"$DOCKER" builder prune -f --filter type=regular --keep-storage 10GB >/dev/null
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^($REPO/|$BASE)" | sed 's/^/  /'
