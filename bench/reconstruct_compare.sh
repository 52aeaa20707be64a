#!/usr/bin/env bash
# PTQ4SAM-S against PTQ4SAM-L on the same calibration set: quantizes with reconstruction and
# prints the mask-logit and embedding SQNR before (PTQ4SAM-S) and after it (PTQ4SAM-L), and
# per block the reconstruction MSE before and after with the time per iteration.
#   bench/reconstruct_compare.sh MODEL CONFIG IMAGES ITERS [extra quantize flags]
#   bench/reconstruct_compare.sh ../shared/fixtures/sam_tiny/checkpoint.pth configs/w4a4_recon.yaml 4 200
# MODEL "vit_b" uses a random ViT-B-shaped SAM. Work files go to $PTQ4SAM_BENCH_DIR
# (default /tmp/ptq4sam_bench); models and scenes are made once and reused.
set -euo pipefail
usage="usage: bench/reconstruct_compare.sh MODEL CONFIG IMAGES ITERS [quantize flags]"
model=${1:?$usage}
config=${2:?$usage}
images=${3:?$usage}
iters=${4:?$usage}
shift 4
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PTQ4SAM_BENCH_DIR:-/tmp/ptq4sam_bench}
mkdir -p "$work"
if [ "$model" = vit_b ]; then
  model=$work/vit_b.pth
  [ -f "$model" ] || "$root/build/bench_image_encoder" --write-model "$model"
fi
[ -d "$work/synth$images" ] || "$root/build/ptq4sam" synth-coco --images "$images" --out "$work/synth$images"
name=$(basename "$model" .pth)_$(basename "$config" .yaml)_${images}img_${iters}it$(echo "$*" | tr -d ' -')
common=(--model "$model" --config "$config" --calib-images "$work/synth$images/images"
        --calib-prompts "$work/synth$images/detections.json" --calib-count "$images" "$@")
/usr/bin/time -f "PTQ4SAM-L: %e s wall, peak RSS %M KB" "$root/build/ptq4sam" quantize "${common[@]}" \
  --recon-iters "$iters" --out "$work/${name}_L.safetensors" --report "$work/${name}_L.json"
python3 - "$work/${name}_L.json" <<'PY'
import json, sys
l = json.load(open(sys.argv[1]))
s = l["before_reconstruction"]
print(f"report: {sys.argv[1]}")
for key in ("mask_logits_sqnr_db", "mask_sign_agreement", "embedding_sqnr_db"):
    print(f"{key:22s} S {s[key]!s:>10.10}   L {l[key]!s:>10.10}")
print(f"{'block':62s} {'mse before':>11s} {'mse trained':>11s} {'mse after':>11s} {'s/iter':>8s}")
for b in l["reconstruction"]:
    kept = "  (reverted)" if b.get("reverted") else ""
    print(f"{b['block']:62s} {b['mse_before']:11.4g} {b['mse_trained']:11.4g} {b['mse_after']:11.4g}"
          f" {b['seconds_per_iter']:8.3f}{kept}")
falling = sum(b["mse_trained"] < b["mse_before"] for b in l["reconstruction"])
print(f"blocks whose training lowered the error: {falling}/{len(l['reconstruction'])}")
PY
