#!/usr/bin/env bash
# Installs what titan.cpp needs on a Debian 12 machine (apt packages, the pip `torch` package
# that provides libtorch), then configures and builds it in build/.
# Environment: TORCH_VERSION (default 2.11.0, used only when no torch >= 2.11 is installed),
# BUILD_DIR (default build), BUILD_TYPE (default Release), TITAN_SANITIZE (ON/OFF),
# JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(cmake ninja-build g++ ccache pkg-config python3 python3-pip
  libtomlplusplus-dev nlohmann-json3-dev libgloo-dev libpcre2-dev libzstd-dev zlib1g-dev libutf8proc-dev libgtest-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON_GIVEN=${PYTHON:-}  # a Python named by the caller reconfigures a build made with another
PYTHON=${PYTHON:-python3}
# The installed torch's version ("2.11.0+cu130"), read from torch/version.py without importing
# torch (that takes seconds, and every ./run_train.sh passes here); empty when there is none.
torch_version() {
  "$PYTHON" - <<'PY' 2>/dev/null || true
import importlib.util, os, re
spec = importlib.util.find_spec("torch")
text = open(os.path.join(spec.submodule_search_locations[0], "version.py")).read()
print(re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text).group(1))
PY
}
have_torch() {
  local v
  v=$(torch_version)
  [ -n "$v" ] && "$PYTHON" -c 'import sys; major, minor = (int(x) for x in sys.argv[1].split(".")[:2]); sys.exit(0 if (major, minor) >= (2, 11) else 1)' "$v"
}
if ! have_torch; then
  TORCH_VERSION=${TORCH_VERSION:-2.11.0}
  say "installing torch==$TORCH_VERSION from PyPI (provides libtorch)"
  PIP_FLAGS=(-q)
  "$PYTHON" -m pip install --help | grep -q -- '--break-system-packages' && \
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)' && \
    [ -f "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ] && \
    PIP_FLAGS+=(--break-system-packages)
  "$PYTHON" -m pip install "${PIP_FLAGS[@]}" "torch==$TORCH_VERSION"
fi
say "torch $(torch_version)"

BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
JOBS=${JOBS:-$(nproc)}
# Configure only when the build folder is new or was configured otherwise; after that the build
# itself re-runs CMake when a CMakeLists.txt changes.
configured() {
  local cache="$BUILD_DIR/CMakeCache.txt"
  [ -f "$BUILD_DIR/build.ninja" ] && [ -f "$cache" ] &&
    grep -qx "CMAKE_BUILD_TYPE:[A-Z]*=$BUILD_TYPE" "$cache" &&
    grep -qx "TITAN_SANITIZE:[A-Z]*=${TITAN_SANITIZE:-OFF}" "$cache" &&
    { [ -z "$PYTHON_GIVEN" ] || grep -qx "Python3_EXECUTABLE:[A-Z]*=$(command -v "$PYTHON")" "$cache"; }
}
if ! configured; then
  say "configuring $BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
    -DTITAN_SANITIZE="${TITAN_SANITIZE:-OFF}" -DPython3_EXECUTABLE="$(command -v "$PYTHON")" >/dev/null
fi
say "building in $BUILD_DIR ($BUILD_TYPE, $JOBS jobs)"
cmake --build "$BUILD_DIR" -j "$JOBS" "$@"
