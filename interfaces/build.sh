#!/usr/bin/env bash
# Build interfaces/vision_msgs into a virtualenv that holds the ROS 2 Kilted wheels.
#
#   bash interfaces/build.sh VENV_DIR
#
# A ROS 2 distro ships vision_msgs (rosdep); PyPI does not, so machines without a distro build the
# upstream-identical subset here. Needs python3 (with its headers), a C and C++ compiler and cmake;
# as root on Debian the missing ones are installed with apt-get. At run time the messages need what
# every ROS wheel in the venv needs: the venv's python (the wheels' .pth bootstrapper re-executes it
# with VENV_DIR/lib on LD_LIBRARY_PATH) and AMENT_PREFIX_PATH=VENV_DIR for ament index lookups.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: bash interfaces/build.sh VENV_DIR (the virtualenv with the ROS 2 wheels)" >&2
  exit 2
fi
VENV="$(cd "$1" && pwd)"
VPY="$VENV/bin/python"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SRC="$HERE/vision_msgs"
BUILD="$HERE/build/vision_msgs"
JOBS="${JOBS:-2}"
START=$SECONDS

log() { echo "[interfaces] $*"; }
die() { echo "[interfaces] error: $*" >&2; exit 1; }

[[ -x "$VPY" ]] || die "$VPY not found: create the venv first (make venv, or python3 -m venv $1)"

python_header() {
  "$VPY" -c 'import os, sysconfig
p = os.path.join(sysconfig.get_paths()["include"], "Python.h")
print(p if os.path.exists(p) else "")'
}

# Preflight: the generated typesupport is C and C++, and the Python bindings include Python.h.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(gcc)
command -v c++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
[[ -n "$(python_header)" ]] || missing+=("python3-dev (Python.h of $VPY)")
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    pyver="$("$VPY" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"
    pkgs=(cmake gcc g++ make)
    # Only a Debian interpreter gets its headers from apt; a pyenv/uv Python ships them itself.
    [[ -n "$(python_header)" ]] || pkgs+=("python${pyver}-dev")
    log "installing build tools with apt-get: ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" \
      >/dev/null
  else
    die "missing ${missing[*]}; install them (Debian: apt-get install cmake gcc g++ make python3-dev) and rerun"
  fi
fi
[[ -n "$(python_header)" ]] || die "Python.h still missing for $VPY; install the headers of that interpreter"

log "installing requirements-build.txt into $VENV"
"$VPY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements-build.txt" 2>&1 \
  | grep -v "is ignored: it is neither" || true
"$VPY" -c "import ament_package, catkin_pkg, rosidl_parser" \
  || die "the build wheels did not install; see the pip output above"

# The wheels' exported CMake targets name the include dirs of the machine that built them
# (/opt/python/cp311-cp311/...); point every such path that does not exist here at this venv's.
log "rewriting the wheels' Python include paths in $VENV/share/**/*.cmake"
"$VPY" - "$VENV/share" <<'PY'
import os, re, sys, sysconfig
import numpy

share = sys.argv[1]
python_inc = sysconfig.get_paths()["include"]
numpy_inc = numpy.get_include()
patterns = [
    (re.compile(r'[^";]*/numpy/(?:_core|core)/include'), numpy_inc),
    (re.compile(r'[^";]*/include/python3\.\d+'), python_inc),
]
changed = 0
for dirpath, _, files in os.walk(share):
    for name in files:
        if not name.endswith(".cmake"):
            continue
        path = os.path.join(dirpath, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = text
        for pattern, replacement in patterns:
            new = pattern.sub(lambda m, r=replacement: m.group(0) if os.path.isdir(m.group(0)) else r, new)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            changed += 1
print(f"[interfaces] {changed} cmake files rewritten (python {python_inc}, numpy {numpy_inc})")
PY

# A cache from another venv or checkout would install into the wrong prefix: start over then.
if [[ -f "$BUILD/CMakeCache.txt" ]] \
  && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD/CMakeCache.txt"; then
  log "build dir was configured for another venv; removing $BUILD"
  rm -rf "$BUILD"
fi

mkdir -p "$BUILD"
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"

log "configuring $SRC"
cmake -S "$SRC" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$VPY" \
  -DBUILD_TESTING=OFF \
  >"$HERE/build/configure.log" 2>&1 \
  || { tail -40 "$HERE/build/configure.log" >&2; die "cmake configure failed (log: $HERE/build/configure.log)"; }

log "building with $JOBS jobs"
cmake --build "$BUILD" --parallel "$JOBS" >"$HERE/build/build.log" 2>&1 \
  || { tail -40 "$HERE/build/build.log" >&2; die "build failed (full log: $HERE/build/build.log)"; }
cmake --install "$BUILD" >"$HERE/build/install.log" 2>&1 \
  || { tail -20 "$HERE/build/install.log" >&2; die "install failed (full log: $HERE/build/install.log)"; }

log "verifying the installed messages"
"$VPY" - <<'PY'
from rclpy.serialization import deserialize_message, serialize_message
from vision_msgs.msg import Detection2D, Detection2DArray, LabelInfo, VisionClass

msg = Detection2DArray(detections=[Detection2D(id="probe")])
assert deserialize_message(serialize_message(msg), Detection2DArray).detections[0].id == "probe"
info = LabelInfo(class_map=[VisionClass(class_id=1, class_name="person")], threshold=0.5)
assert deserialize_message(serialize_message(info), LabelInfo).class_map[0].class_name == "person"
PY
log "vision_msgs installed into $VENV in $((SECONDS - START)) s (run with AMENT_PREFIX_PATH=$VENV)"
