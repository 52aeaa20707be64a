#!/usr/bin/env bash
# Configures and builds ptq4sam (library, binary, tests, benches) in ./build, Release.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
