#!/usr/bin/env bash
# The whole flow on a local ImageFolder, from a timm hub-format model folder, to an OpenVINO bundle.
# Defaults: the CUB birds model and data under ../shared/data; override any of them:
#   MODEL=path/to/hub_folder TRAIN=path/train TEST=path/test OUT=runs/cub ./run.sh
set -euo pipefail
DATA=${EDGEFG_DATA:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data}
MODEL=${MODEL:-$DATA/models/mobilenetv2_cub100}
TRAIN=${TRAIN:-$DATA/cub100/train}
TEST=${TEST:-$DATA/cub100/test}
OUT=${OUT:-runs/cub_birds_openvino}
CALIB=${CALIB:-300}
MAX_IMAGES=${MAX_IMAGES:-}            # validate on the first N images only (quick runs)
EDGEFG=${EDGEFG:-edgefg}
limit=${MAX_IMAGES:+--max-images $MAX_IMAGES}

# 1. compress: the FP32 reference and an INT8 artifact calibrated on a class-stratified subset of TRAIN,
#    their reports measured on the held-out TEST images
$EDGEFG compress "$MODEL" --recipe fp32 --data "$TRAIN" --val-data "$TEST" --calib-size "$CALIB" -o "$OUT/art-fp32" --force
$EDGEFG compress "$MODEL" --recipe int8 --data "$TRAIN" --val-data "$TEST" --calib-size "$CALIB" -o "$OUT/art-int8" --force

# 2. deploy both for an Intel CPU (OpenVINO IR; FP32 runs in f32, INT8 in int8)
$EDGEFG deploy "$OUT/art-fp32" --target intel-cpu -o "$OUT/bundle-fp32" --force
$EDGEFG deploy "$OUT/art-int8" --target intel-cpu -o "$OUT/bundle-int8" --force

# 3. validate the INT8 bundle against the FP32 artifact on TEST: top-1 may drop ≤ 1 point
$EDGEFG validate "$OUT/bundle-int8" --data "$TEST" --reference "$OUT/art-fp32" $limit \
  --max-top1-drop 1.0 --json "$OUT/validate.json" --markdown "$OUT/validate.md" --junit "$OUT/validate.xml"

# 4. side-by-side speed, then the runtime on a folder of images (a camera would be --source 0)
$EDGEFG bench "$OUT/bundle-fp32" "$OUT/bundle-int8" --rounds 3 --iters 30 --json "$OUT/bench.json"
first_class=$(ls "$TEST" | head -n 1)
$EDGEFG run "$OUT/bundle-int8" --source "$TEST/$first_class" --max-frames 10 --output "$OUT/run.jsonl"
echo "done: $OUT"
