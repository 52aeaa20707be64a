#!/usr/bin/env bash
# PTQ4SAM-S of a random ViT-B-shaped SAM on synthetic scenes: calibration time, report
# (per-quantizer and per-block SQNR, embedding and mask-logit SQNR, mask agreement) and
# artifact size against the FP32 checkpoint.
#   bench/quantize_vit_b.sh CONFIG IMAGES [extra quantize flags, e.g. --quant-encoder]
#   bench/quantize_vit_b.sh configs/w4a4.yaml 32
# Work files go to $PTQ4SAM_BENCH_DIR (default /tmp/ptq4sam_bench); the model and scenes are
# made once and reused.
set -euo pipefail
config=${1:?usage: bench/quantize_vit_b.sh CONFIG IMAGES [quantize flags]}
images=${2:?usage: bench/quantize_vit_b.sh CONFIG IMAGES [quantize flags]}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PTQ4SAM_BENCH_DIR:-/tmp/ptq4sam_bench}
mkdir -p "$work"
[ -f "$work/vit_b.pth" ] || "$root/build/bench_image_encoder" --write-model "$work/vit_b.pth"
[ -d "$work/synth$images" ] || "$root/build/ptq4sam" synth-coco --images "$images" --out "$work/synth$images"
name=$(basename "$config" .yaml)_${images}img
/usr/bin/time -v "$root/build/ptq4sam" quantize --model "$work/vit_b.pth" --config "$config" \
  --calib-images "$work/synth$images/images" --calib-prompts "$work/synth$images/detections.json" \
  --calib-count "$images" --out "$work/$name.safetensors" --report "$work/$name.json" "$@"
echo "report: $work/$name.json"
