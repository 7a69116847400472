#!/usr/bin/env bash
# Cold set-up, as a new user gets it: a fresh clone of this repository's HEAD in an empty folder (no ../shared
# beside it unless --with-shared), then `make setup` (the demo's set-up) timed, and the venv's size.
#
#   bash bench/setup_cold.sh [--with-shared] [--layers "ultralytics ..."]
#
# Prints the set-up's own output, then one line of figures: seconds, venv MB, and pip's cache size before and
# after (pip caches downloaded wheels, so a second cold install on the same machine downloads less).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
with_shared=0 layers=""
while [ $# -gt 0 ]; do
  case "$1" in
    --with-shared) with_shared=1 ;;
    --layers) layers=$2; shift ;;
    *) echo "usage: bash bench/setup_cold.sh [--with-shared] [--layers \"NAME ...\"]" >&2; exit 2 ;;
  esac
  shift
done
work=$(mktemp -d /tmp/pv-setup-cold.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$REPO" "$work/pv"
[ "$with_shared" = 1 ] && ln -s "$(realpath "$REPO/../shared")" "$work/shared"
cache_mb() { du -sm "$(python3.11 -m pip cache dir 2>/dev/null || echo "$HOME/.cache/pip")" 2>/dev/null | cut -f1 || echo 0; }
cache_before=$(cache_mb)
start=$(date +%s.%N)
make -C "$work/pv" setup WITH="$layers"
seconds=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "setup_cold: ${seconds} s, venv $(du -sm "$work/pv/.venv" | cut -f1) MB, commit $(git -C "$REPO" rev-parse --short HEAD)," \
  "../shared $([ "$with_shared" = 1 ] && echo beside || echo absent), layers '${layers:-demo}', pip cache ${cache_before} MB before," \
  "$(cache_mb) MB after, load average $(cut -d' ' -f1-3 /proc/loadavg)"
