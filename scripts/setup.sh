#!/usr/bin/env bash
# Idempotent, cached set-up: venv with pinned packages, the privacy_vision_msgs interfaces built
# into the venv's ROS prefix, keys for the local ingest, and the demo video. A second run with
# nothing changed installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV="$REPO/.venv"
PY=${PYTHON:-python3.11}
started=$EPOCHREALTIME

say() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

command -v "$PY" >/dev/null || { echo "[setup] $PY not found: install Python 3.11 (ROS 2 Kilted wheels are built for it)" >&2; exit 1; }
for tool in cmake make g++; do
  command -v "$tool" >/dev/null || { echo "[setup] '$tool' is missing: apt-get install cmake build-essential" >&2; exit 1; }
done

# System packages the tests use: PostgreSQL (ingest store), Chromium (dashboard test), iproute2 (netns test).
missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)
if [ -d ../shared/rqt ]; then  # rqt's tests: a virtual display and screenshots
  command -v Xvfb >/dev/null || missing+=(xvfb)
  command -v import >/dev/null || missing+=(imagemagick)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
      || { echo "[setup] apt-get install ${missing[*]} failed" >&2; exit 1; }
  else
    echo "[setup] missing system packages: ${missing[*]} (install them: sudo apt-get install ${missing[*]})" >&2; exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment in .venv"
  "$PY" -m venv "$VENV"
fi

lock_hash=$(hash_of requirements.lock requirements-nodeps.txt)
if [ "$(cat "$VENV/.requirements.hash" 2>/dev/null)" != "$lock_hash" ]; then
  say "installing pinned Python packages (ROS 2 Kilted wheels, OpenDP, OpenCV, torch, Ultralytics, ...)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$lock_hash" > "$VENV/.requirements.hash"
else
  say "Python packages up to date"
fi

# Make the repository importable from the venv (what an editable install would do).
echo "$REPO" > "$VENV/lib/python3.11/site-packages/privacy_vision_repo.pth"

msgs_hash=$(hash_of msg/package.xml msg/CMakeLists.txt msg/msg/*.msg msg/srv/*.srv "$VENV/.requirements.hash")
if [ "$(cat "$VENV/.msgs.hash" 2>/dev/null)" != "$msgs_hash" ]; then
  say "building interfaces privacy_vision_msgs into the venv's ROS prefix"
  rm -rf build/privacy_vision_msgs && mkdir -p build/privacy_vision_msgs
  (
    cd build/privacy_vision_msgs
    export AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" _ROS_WHEELS_BOOTSTRAP_COMPLETE=
    cmake "$REPO/msg" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF > cmake.log 2>&1 \
      && make -j"$(nproc)" > make.log 2>&1 && make install > install.log 2>&1
  ) || { echo "[setup] interface build failed; see build/privacy_vision_msgs/*.log" >&2; tail -20 build/privacy_vision_msgs/*.log >&2; exit 1; }
  "$VENV/bin/python" -c "import privacy_vision_msgs.msg, privacy_vision_msgs.srv" \
    || { echo "[setup] built interfaces do not import" >&2; exit 1; }
  echo "$msgs_hash" > "$VENV/.msgs.hash"
else
  say "interfaces up to date"
fi

# The real ROS 2 command line (ros2 launch/run/node/topic/param/service/lifecycle) from ../shared/ros2cli, offline:
# its install.sh is idempotent (stamps in the venv), and ament_register.py makes this source tree a package that
# `ros2 launch privacy_vision ...` and `ros2 run privacy_vision ...` find with AMENT_PREFIX_PATH=$VENV (no colcon).
ROS2CLI="$REPO/../shared/ros2cli"
if [ -f "$ROS2CLI/install.sh" ]; then
  bash "$ROS2CLI/install.sh" "$VENV" | sed 's/^/[setup] /'
  "$VENV/bin/python" "$ROS2CLI/ament_register.py" "$REPO" | sed 's/^/[setup] /'
else
  say "no ../shared/ros2cli: the ros2 command line is not installed (tests that use it skip)"
fi

# rqt (Topic Monitor, Node Graph, Parameter Reconfigure, Console, Plot) from ../shared/rqt: a developer and test tool
# only (PyQt5 is GPL-3.0 and never a dependency of the package). Its install.sh is idempotent (stamp in the venv);
# --pip-deps takes PyQt5 and pydot from the package index once, --apt (as root) the X11 libraries, Graphviz and icons.
RQT="$REPO/../shared/rqt"
if [ -f "$RQT/install.sh" ] && [ -f "$ROS2CLI/install.sh" ]; then
  rqt_options=(--pip-deps)
  [ "$(id -u)" = 0 ] && rqt_options+=(--apt)
  bash "$RQT/install.sh" "$VENV" "${rqt_options[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) | sed 's/^/[setup] /'
else
  say "no ../shared/rqt: rqt is not installed (its tests skip)"
fi

if [ ! -f var/pki/audit.key ]; then
  say "creating the device key, CA and ingest certificate (var/pki)"
  "$VENV/bin/python" -m privacy_vision.cli pki --out var/pki > /dev/null
fi

if [ -f ../shared/data/video/vtest.avi ]; then
  say "demo video: ../shared/data/video/vtest.avi"
elif [ -f data/vtest.avi ]; then
  say "demo video: data/vtest.avi"
else
  say "fetching the demo video from Debian's opencv-doc package"
  tmp=$(mktemp -d)
  ( cd "$tmp" && { apt-get download opencv-doc >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get download opencv-doc >/dev/null; }; } ) \
    || { echo "[setup] could not download opencv-doc (apt-get download opencv-doc); pass --source to use your own video" >&2; exit 1; }
  dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/x"
  mkdir -p data
  found=$(find "$tmp/x" -name 'vtest.avi*' | head -1)
  case "$found" in
    *.gz) gunzip -c "$found" > data/vtest.avi ;;
    "") echo "[setup] vtest.avi not found in opencv-doc" >&2; exit 1 ;;
    *) cp "$found" data/vtest.avi ;;
  esac
  rm -rf "$tmp"
  say "demo video: data/vtest.avi"
fi

say "done in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
