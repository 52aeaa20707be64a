#!/usr/bin/env bash
# Runs the tests in ./build: the whole suite, then the numeric suites again with every kernel
# and oneDNN on the generic x86-64 path and VNNI off (PTQ4SAM_CPU=generic), so the fallbacks
# are tested on a CPU that has the fast paths.
set -euo pipefail
cd "$(dirname "$0")/../build"
ctest --output-on-failure
numeric='(^|/)(SamParity|Attention|QuantizedAttention|QuantizedLinear|IntegerRuntime|QuantReference|CpuPaths|Conv2d|YoloxParity|FasterRcnnParity|Gelu|FakeQuant|Ptq4samS)\.'
echo "== again on the generic CPU path (PTQ4SAM_CPU=generic): $numeric"
PTQ4SAM_CPU=generic ctest --output-on-failure -R "$numeric"
