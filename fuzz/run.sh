#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan) in build-fuzz/ and runs each one for
# SECONDS seconds or RUNS executions, whichever comes first, with libFuzzer's 2 GB RSS and
# malloc limits. Seeds: the valid files our writers make (tests/fuzz_replay_test.cc's FuzzSeeds,
# kept with PTQ4SAM_FUZZ_SEEDS), the fixtures' files and fuzz/corpus/. A crash, hang or
# allocation past the limit is written to fuzz/crashes/<target>/ (commit it: the replay test
# then holds it; one that is a fixture's file unchanged is replayed from ../shared instead).
# The grown corpus stays in build-fuzz/corpus/<target>/ for the next run; only the small hand-made seeds of fuzz/corpus/ are committed (a 10-minute run grows tens of MB,
# which the replay test would then read on every run).
#
#   fuzz/run.sh [SECONDS=600] [RUNS=1000000] [TARGET...]    (PTQ4SAM_FUZZ_JOBS targets at once, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
runs=${2:-1000000}
shift $(( $# > 2 ? 2 : $# ))
fixtures=${PTQ4SAM_FIXTURES:-../shared/fixtures}

if ! command -v clang++-14 >/dev/null || [ ! -e /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ]; then
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends clang-14 libfuzzer-14-dev libclang-rt-14-dev libomp-14-dev
fi
targets=("$@")
# The slow ones (a model per input, image decoding) first, so that they overlap the rest.
[ ${#targets[@]} -gt 0 ] || targets=(artifact image checkpoint coco_results coco_annotations safetensors npy qconfig prompt_options)
CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPTQ4SAM_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target ptq4sam_tests "${targets[@]/#/fuzz_}"

seeds=build-fuzz/seeds
rm -rf "$seeds"
PTQ4SAM_FUZZ_SEEDS="$PWD/$seeds" build-fuzz/ptq4sam_tests --gtest_filter='FuzzSeeds.*' >/dev/null
add_fixture_seed() {  # target file...
  local target=$1; shift
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$seeds/$target/fixture_$(basename "$f")"; done
  return 0
}
add_fixture_seed coco_annotations "$fixtures/coco_small/instances.json"
add_fixture_seed coco_results "$fixtures/coco_small/results_segm.json" "$fixtures/coco_small/results_bbox.json"
add_fixture_seed image "$fixtures/sam_tiny/image.jpg"

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1
fuzz_one() {
  local target=$1 status=0
  local work=build-fuzz/corpus/$target log=build-fuzz/fuzz_$target.log
  mkdir -p "$work" "fuzz/crashes/$target" "fuzz/corpus/$target"
  build-fuzz/fuzz_"$target" "$work" "$seeds/$target" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -runs="$runs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=30 \
    -artifact_prefix="fuzz/crashes/$target/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  {
    echo "fuzz: $target: exit $status"
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^Done|ERROR|SUMMARY" "$log" | sed "s/^/  /"
  } || true
}
export -f fuzz_one
export seeds seconds runs
printf '%s\n' "${targets[@]}" | xargs -P "${PTQ4SAM_FUZZ_JOBS:-2}" -I{} bash -c 'fuzz_one {}'
