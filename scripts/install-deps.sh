#!/usr/bin/env bash
# Installs every Debian package ptq4sam needs to build, test and bench. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake g++ pkg-config
  libtorch-dev libopenblas0-openmp
  libdnnl-dev
  libopencv-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev
  zlib1g-dev
  pybind11-dev python3-dev python3-numpy
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "install-deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
