#!/usr/bin/env bash
# Run HERE (a machine that reaches Debian's packages) before scripts/gpu_check.sh on a GPU
# machine that reaches no package registry: downloads the Debian -dev packages the build needs
# into .gpu-deps/ (ignored by git), which gpu_check.sh unpacks into a private prefix there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps
grep -qxF '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64'
(cd .gpu-deps && apt-get $o download libtomlplusplus-dev libtomlplusplus3 nlohmann-json3-dev libgloo-dev \
   libgtest-dev googletest zlib1g-dev libpcre2-dev libpcre2-8-0 libzstd-dev libzstd1 libutf8proc-dev \
   libutf8proc2 >/dev/null)
ls .gpu-deps
