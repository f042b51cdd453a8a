#!/bin/bash
# Installs what m2n2 needs on Debian 12 (bookworm) and checks the BLAS in use.
# With --test, also what the tests alone need: Chromium, Node.js and puppeteer-core
# (npm, into tests/serve/node_modules) for the browser test of `m2n2 serve`.
# Run as root, or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = --test ] && with_tests=1
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  libtorch-dev libopencv-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libgtest-dev libbenchmark-dev zlib1g-dev \
  libcpp-httplib-dev libspng-dev pybind11-dev python3-pybind11 python3-pytest \
  libopenblas0-openmp python3 python3-torch python3-numpy python3-opencv \
  python3-pil python3-regex python3-requests python3-filelock python3-importlib-metadata python3-tqdm \
  python3-packaging python3-fsspec python3-yaml python3-typing-extensions > /dev/null
# LibTorch links the system libblas.so.3: make sure it is OpenBLAS, not the
# reference BLAS (50x slower on matrix products), and OpenBLAS's OpenMP build, which
# runs on LibTorch's own OpenMP threads. The pthread build keeps a second pool of
# threads that spin between calls: on 2 cores the GrabCut eval took 12 % longer.
lib=/usr/lib/$(uname -m)-linux-gnu/openblas-openmp
for name in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  if [ -e "$lib/$name" ]; then
    $SUDO update-alternatives --set "$name-$(uname -m)-linux-gnu" "$lib/$name" > /dev/null
  fi
done
echo "m2n2 setup: BLAS -> $(readlink -f /etc/alternatives/libblas.so.3-$(uname -m)-linux-gnu 2>/dev/null || echo unknown)"
if [ "$with_tests" = 1 ]; then
  pkgs="chromium"
  command -v npm > /dev/null || pkgs="$pkgs nodejs npm"
  $SUDO apt-get install -y -qq --no-install-recommends $pkgs > /dev/null
  # puppeteer-core drives Debian's Chromium; it downloads no browser of its own.
  PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix tests/serve --no-audit --no-fund --loglevel=error > /dev/null
  echo "m2n2 setup: browser test -> $(chromium --version 2>/dev/null | head -1), puppeteer-core $(node -p "require('./tests/serve/node_modules/puppeteer-core/package.json').version")"
fi
