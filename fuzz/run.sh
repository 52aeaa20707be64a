#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan) in build-fuzz/ and runs each one for
# SECONDS seconds or RUNS executions, whichever comes first, with libFuzzer's 2 GB RSS and
# malloc limits. Seeds: the valid files our writers make (tests/fuzz_replay_test.cc's FuzzSeeds,
# kept with PTQ4SAM_FUZZ_SEEDS), the fixtures' files and fuzz/corpus/. A crash, hang or
# allocation past the limit is written to fuzz/crashes/<target>/ (commit it: the replay test
# then holds it). At the end each target's corpus is merged into fuzz/corpus/<target>/, keeping
# the inputs that add coverage (up to 64 KB each).
#
#   fuzz/run.sh [SECONDS=600] [RUNS=1000000] [TARGET...]
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
CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPTQ4SAM_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint safetensors artifact npy coco_annotations coco_results qconfig prompt_options image)

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
for target in "${targets[@]}"; do
  work=build-fuzz/corpus/$target
  mkdir -p "$work" "fuzz/crashes/$target" "fuzz/corpus/$target"
  log=build-fuzz/fuzz_$target.log
  echo "fuzz: $target for ${seconds}s or $runs runs"
  status=0
  build-fuzz/fuzz_"$target" "$work" "$seeds/$target" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -runs="$runs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=30 \
    -artifact_prefix="fuzz/crashes/$target/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done|ERROR|SUMMARY" "$log" | sed "s/^/  $target: /" || true
  [ $status -eq 0 ] || echo "  $target: exit $status (see $log)"
  build-fuzz/fuzz_"$target" -merge=1 -max_len=65536 "fuzz/corpus/$target" "$work" >/dev/null 2>&1 || true
done
