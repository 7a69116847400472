#!/usr/bin/env bash
# Idempotent, cached set-up: venv with pinned packages, the privacy_vision_msgs and tf2_msgs interfaces built
# into the venv's ROS prefix, keys for the local ingest, and the demo video. A second run with
# nothing changed installs nothing.
#
#   bash scripts/setup.sh [LAYER ...]     (make setup WITH="LAYER ...")
#
# Layers of Python packages, all pinned by requirements.lock: the demo's own (requirements/demo.in, always);
# ultralytics, tflite, postgres (requirements/NAME.in: optional backends); test (everything in
# requirements.lock, what `make test` and CI use, plus the Debian packages the tests need).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV="$REPO/.venv"
PY=${PYTHON:-python3.11}
started=$EPOCHREALTIME

say() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

layers=(demo)
for layer in "$@"; do
  case "$layer" in
    test) layers+=(test) ;;
    demo) ;;
    *)
      [ -f "requirements/$layer.in" ] || {
        echo "[setup] unknown layer '$layer': choose from test $(cd requirements && ls *.in | sed 's/\.in$//' | grep -vx demo | tr '\n' ' ')" >&2
        exit 2
      }
      layers+=("$layer")
      ;;
  esac
done

command -v "$PY" >/dev/null || { echo "[setup] $PY not found: install Python 3.11 (ROS 2 Kilted wheels are built for it)" >&2; exit 1; }
for tool in cmake make g++; do
  command -v "$tool" >/dev/null || { echo "[setup] '$tool' is missing: apt-get install cmake build-essential" >&2; exit 1; }
done

# System packages only the tests use: PostgreSQL (ingest store), Chromium (dashboard test), iproute2 (netns test).
if [[ " ${layers[*]} " == *" test "* ]]; then
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
      say "installing Debian packages for the tests: ${missing[*]} (apt-get; chromium is about 300 MB)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
        || { echo "[setup] apt-get install ${missing[*]} failed" >&2; exit 1; }
    else
      echo "[setup] missing system packages: ${missing[*]} (install them: sudo apt-get install ${missing[*]})" >&2; exit 1
    fi
  fi
fi

# The demo video, fetched while pip works when it is not here yet (a download of about 100 MB from Debian).
fetch_video() {
  if [ -f ../shared/data/video/vtest.avi ]; then
    say "demo video: ../shared/data/video/vtest.avi"
  elif [ -f data/vtest.avi ]; then
    say "demo video: data/vtest.avi"
  else
    local tmp found
    tmp=$(mktemp -d)
    ( cd "$tmp" && { apt-get download opencv-doc >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get download opencv-doc >/dev/null; }; } ) \
      || { echo "[setup] could not download opencv-doc (apt-get download opencv-doc); pass --source to use your own video" >&2; return 1; }
    dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/x"
    mkdir -p data
    found=$(find "$tmp/x" -name 'vtest.avi*' | head -1)
    case "$found" in
      *.gz) gunzip -c "$found" > data/vtest.avi.part ;;
      "") echo "[setup] vtest.avi not found in opencv-doc" >&2; return 1 ;;
      *) cp "$found" data/vtest.avi.part ;;
    esac
    mv data/vtest.avi.part data/vtest.avi  # whole or not at all: a cut-off copy is never taken for the video
    rm -rf "$tmp"
    say "demo video: data/vtest.avi (from Debian's opencv-doc package, $(du -h data/vtest.avi | cut -f1))"
  fi
}
mkdir -p build
video_job=""
if [ -f ../shared/data/video/vtest.avi ] || [ -f data/vtest.avi ]; then
  fetch_video > build/video.log
else
  say "fetching the demo video from Debian's opencv-doc package (about 100 MB) while the packages install"
  fetch_video > build/video.log 2>&1 &
  video_job=$!
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment in .venv"
  "$PY" -m venv "$VENV"
fi

# pip with what it is doing on the console: each download of 1 MB or more with its size, the rest counted, and
# the venv's size every 15 s while pip unpacks (the long, silent part). The full log stays in build/.
pip_install() {
  local label=$1; shift
  mkdir -p build
  local log="build/pip-$label.log" watcher
  ( sleep 15; while true; do say "  ... .venv holds $(du -sm "$VENV" 2>/dev/null | cut -f1) MB after $(( ${EPOCHREALTIME%.*} - ${started%.*} )) s"; sleep 15; done ) &
  watcher=$!
  set +e
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 | tee "$log" | awk '
    function megabytes(size, unit) { return unit ~ /^kB/ ? size / 1000 : unit ~ /^GB/ ? size * 1000 : unit ~ /^MB/ ? size : size / 1e6 }
    /^ *Downloading / {
      size = $(NF - 1); unit = $NF; sub(/^\(/, "", size); sub(/\)$/, "", unit)
      mb = megabytes(size, unit); total += mb; count += 1
      if (mb >= 1) { printf "[setup]   downloading %s (%s %s)\n", $2, size, unit; fflush() } else small += 1
    }
    /^Installing collected packages:/ { n = split(substr($0, 32), names, ","); printf "[setup]   unpacking %d packages into .venv (%.0f MB downloaded in %d files, %d of them under 1 MB)\n", n, total, count, small; fflush() }
    /^Successfully installed/ { printf "[setup]   installed %d packages\n", NF - 2; fflush() }
    /^(ERROR|error)/ { print; fflush() }
  '
  local status=${PIPESTATUS[0]}
  set -e
  kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null || true
  [ "$status" = 0 ] || { echo "[setup] pip failed for $label (exit $status); the last lines of $log:" >&2; grep -v "is ignored: it is neither" "$log" | tail -15 >&2; exit 1; }
}

# A layer is (re)installed when the lock or its requirements changed; the test layer is the whole lock, so it
# holds every other layer.
layer_hash() {
  case "$1" in
    test) hash_of requirements.lock requirements-nodeps.txt ;;
    *) hash_of requirements.lock "requirements/$1.in" ;;
  esac
}
installed() { [ "$(cat "$VENV/.layer-$1.hash" 2>/dev/null)" = "$(layer_hash "$1")" ]; }
ordered=("${layers[@]}")
[[ " ${layers[*]} " == *" test "* ]] && ordered=(test)  # the whole lock holds every layer
for layer in "${ordered[@]}"; do
  if installed "$layer" || { [ "$layer" != test ] && installed test; }; then
    say "Python packages of '$layer' up to date"
    continue
  fi
  case "$layer" in
    test)
      say "installing every pinned package of requirements.lock for the tests and benchmarks (torch, Ultralytics, ...; about 6 GB)"
      pip_install test -r requirements.lock
      pip_install nodeps --no-deps -r requirements-nodeps.txt
      ;;
    demo)
      say "installing the demo's pinned Python packages (ROS 2 Kilted wheels, OpenDP, OpenCV, onnxruntime, ...; about 1 GB)"
      pip_install demo -r requirements/demo.in -c requirements.lock
      ;;
    *)
      say "installing the pinned Python packages of '$layer' (requirements/$layer.in)"
      pip_install "$layer" -r "requirements/$layer.in" -c requirements.lock
      ;;
  esac
  layer_hash "$layer" > "$VENV/.layer-$layer.hash"
done

# Make the repository importable from the venv (what an editable install would do).
echo "$REPO" > "$VENV/lib/python3.11/site-packages/privacy_vision_repo.pth"
# ...and its two commands on the venv's PATH, as a pip install's console scripts would be.
for command in "privacy-vision privacy_vision.cli" "privacy-vision-ingest privacy_vision.cloud.ingest"; do
  set -- $command
  printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$VENV/bin/python" "$2" > "$VENV/bin/$1"
  chmod +x "$VENV/bin/$1"
done

# An interface package built with CMake + rosidl into the venv's ROS prefix, again only when its sources or the lock
# changed (the hash in .venv/.NAME.hash).
build_interfaces() {
  local name=$1 source=$2 imports=$3 hash
  hash=$(hash_of "$source"/package.xml "$source"/CMakeLists.txt "$source"/msg/*.msg msg/cmake/*.cmake requirements.lock \
    $(ls "$source"/srv/*.srv 2>/dev/null))
  if [ "$(cat "$VENV/.$name.hash" 2>/dev/null)" = "$hash" ]; then
    say "interfaces $name up to date"
    return
  fi
  say "building interfaces $name into the venv's ROS prefix (CMake and g++, about 40 s on 2 cores)"
  local built_started=${EPOCHREALTIME%.*}
  rm -rf "build/$name" && mkdir -p "build/$name"
  (
    cd "build/$name"
    export AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" _ROS_WHEELS_BOOTSTRAP_COMPLETE=
    cmake "$REPO/$source" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF > cmake.log 2>&1 \
      && make -j"$(nproc)" > make.log 2>&1 && make install > install.log 2>&1
  ) || { echo "[setup] interface build failed; see build/$name/*.log" >&2; tail -20 "build/$name"/*.log >&2; exit 1; }
  "$VENV/bin/python" -c "import $imports" || { echo "[setup] built interfaces $name do not import" >&2; exit 1; }
  echo "$hash" > "$VENV/.$name.hash"
  say "  built in $(( ${EPOCHREALTIME%.*} - built_started )) s"
}
build_interfaces privacy_vision_msgs msg "privacy_vision_msgs.msg, privacy_vision_msgs.srv"
# tf2_msgs (the type of /tf_static, which the tracking node publishes) is not on PyPI as a wheel: this copy of its
# TFMessage, with upstream's definition and so its type hash, is built here, in the demo layer, because a node needs it.
build_interfaces tf2_msgs interfaces/tf2_msgs tf2_msgs.msg

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
if [[ " ${layers[*]} " != *" test "* ]]; then
  say "rqt is installed with the test layer (make test, or make setup WITH=test)"
elif [ -f "$RQT/install.sh" ] && [ -f "$ROS2CLI/install.sh" ]; then
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

if [ -n "$video_job" ]; then
  wait "$video_job" || { cat build/video.log >&2; exit 1; }
fi
cat build/video.log
say "done in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
