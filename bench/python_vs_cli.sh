#!/usr/bin/env bash
# The Python module's set_image + predict against `ptq4sam segment`'s own encoder + decoder
# time (its stderr line), on a random ViT-B-shaped SAM quantized to W8A8 (as runtime_vit_b.sh
# makes it) and one synthetic scene with one box. Minimum of RUNS each.
#   bench/python_vs_cli.sh [THREADS (default 2)] [RUNS (default 5)]
set -euo pipefail
threads=${1:-2}
runs=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PTQ4SAM_BENCH_DIR:-/tmp/ptq4sam_bench}
mkdir -p "$work"
[ -f "$work/vit_b.pth" ] || "$root/build/bench_image_encoder" --write-model "$work/vit_b.pth"
[ -d "$work/synth1" ] || "$root/build/ptq4sam" synth-coco --images 1 --out "$work/synth1"
artifact="$work/runtime_w8a8.safetensors"
if [ ! -f "$artifact" ]; then
  sed -e 's/observer: MSEObserver/observer: MinMaxObserver/' "$root/configs/w8a8.yaml" > "$work/runtime_w8a8.yaml"
  "$root/build/ptq4sam" quantize --model "$work/vit_b.pth" --config "$work/runtime_w8a8.yaml" --quant-encoder \
    --calib-images "$work/synth1/images" --calib-prompts "$work/synth1/detections.json" --calib-count 1 \
    --threads "$threads" --out "$artifact"
fi
image=$(ls "$work"/synth1/images/* | head -1)
box=100,100,400,380

best_cli=
for _ in $(seq "$runs"); do
  line=$("$root/build/ptq4sam" segment --model "$artifact" --image "$image" --box "$box" --threads "$threads" \
           --out "$work/python_vs_cli_out" 2>&1 >/dev/null | grep '^image encoder:')
  # "image encoder: 1.071 s, mask decoder: 0.099 s"
  t=$(echo "$line" | awk '{print $3 + $7}')
  best_cli=$(awk -v a="$t" -v b="${best_cli:-$t}" 'BEGIN {print (a < b ? a : b)}')
done

best_py=$(PYTHONPATH="$root/build/python" /usr/bin/python3 - "$artifact" "$image" "$box" "$threads" "$runs" <<'PY'
import sys, time
import numpy as np
import ptq4sam
artifact, image, box, threads, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
predictor = ptq4sam.SamPredictor(artifact, threads=threads)
pixels = ptq4sam.read_image(image)
box = np.array([float(v) for v in box.split(",")])
best = float("inf")
for _ in range(runs):
    start = time.perf_counter()
    predictor.set_image(pixels)
    predictor.predict(box=box, multimask_output=False)
    best = min(best, time.perf_counter() - start)
print("%.3f" % best)
PY
)
awk -v c="$best_cli" -v p="$best_py" 'BEGIN {
  printf "W8A8 ViT-B, one box, encoder + decoder (min of runs):\n  ptq4sam segment  %.3f s\n  Python module    %.3f s  (%+.1f%%)\n", c, p, 100 * (p - c) / c }'
