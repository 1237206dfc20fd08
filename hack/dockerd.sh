#!/usr/bin/env bash
# Start Debian's dockerd in the background unless one answers (no systemd on these machines).
set -euo pipefail
DOCKER="${DOCKER:-/usr/bin/docker}"
"$DOCKER" info >/dev/null 2>&1 && exit 0
log="${HADIS_DOCKERD_LOG:-$HOME/.cache/hadis/dockerd.log}"
mkdir -p "$(dirname "$log")"
echo "starting dockerd (log: $log)" >&2
setsid dockerd >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 120); do
  "$DOCKER" info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "error: dockerd did not answer in 60s; see $log" >&2
tail -20 "$log" >&2
exit 1
