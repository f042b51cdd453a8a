#!/bin/bash
# Installs what m2n2 needs on Debian 12 (bookworm) and checks the BLAS in use.
# Run as root, or as a user with sudo.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  libtorch-dev libopencv-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libgtest-dev libbenchmark-dev zlib1g-dev \
  libopenblas0-pthread python3 python3-torch python3-numpy python3-opencv \
  python3-pil python3-regex python3-requests python3-filelock python3-importlib-metadata python3-tqdm \
  python3-packaging python3-fsspec python3-yaml python3-typing-extensions > /dev/null
# LibTorch links the system libblas.so.3: make sure it is OpenBLAS, not the
# reference BLAS (50x slower on matrix products).
blas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
[ "$(uname -m)" = aarch64 ] && blas=/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3
if [ -e "$blas" ]; then
  $SUDO update-alternatives --set "libblas.so.3-$(uname -m)-linux-gnu" "$blas" > /dev/null
fi
echo "m2n2 setup: BLAS -> $(readlink -f /etc/alternatives/libblas.so.3-$(uname -m)-linux-gnu 2>/dev/null || echo unknown)"
