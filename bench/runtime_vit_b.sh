#!/usr/bin/env bash
# The integer runtime against FP32 on a random ViT-B-shaped SAM: image-embedding time, decoder
# time, peak RSS and size, one row per model (`ptq4sam bench`). The W8A8, W6A6 and W4A4
# artifacts are calibrated on one synthetic scene with fast observers (min/max weights, AGQ
# on): calibration quality does not change the runtime's speed.
#   bench/runtime_vit_b.sh [THREADS (default 2)] [RUNS (default 3)] [--backend simulated] [--rounds N]
# With --rounds N the models take turns N times (RUNS embeddings each per turn), so that a drift
# in the machine's speed falls on all of them.
# Work files go to $PTQ4SAM_BENCH_DIR (default /tmp/ptq4sam_bench) and are reused.
set -euo pipefail
threads=${1:-2}
runs=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PTQ4SAM_BENCH_DIR:-/tmp/ptq4sam_bench}
mkdir -p "$work"
[ -f "$work/vit_b.pth" ] || "$root/build/bench_image_encoder" --write-model "$work/vit_b.pth"
[ -d "$work/synth1" ] || "$root/build/ptq4sam" synth-coco --images 1 --out "$work/synth1"
models=("$work/vit_b.pth")
for bit in 8 6 4; do
  artifact="$work/runtime_w${bit}a${bit}.safetensors"
  if [ ! -f "$artifact" ]; then
    sed -e 's/observer: MSEObserver/observer: MinMaxObserver/' "$root/configs/w${bit}a${bit}.yaml" > "$work/runtime_w${bit}a${bit}.yaml"
    "$root/build/ptq4sam" quantize --model "$work/vit_b.pth" --config "$work/runtime_w${bit}a${bit}.yaml" \
      --quant-encoder --calib-images "$work/synth1/images" --calib-prompts "$work/synth1/detections.json" \
      --calib-count 1 --threads "$threads" --out "$artifact"
  fi
  models+=("$artifact")
done
args=()
for m in "${models[@]}"; do args+=(--model "$m"); done
"$root/build/ptq4sam" bench "${args[@]}" --threads "$threads" --runs "$runs" "$@"
