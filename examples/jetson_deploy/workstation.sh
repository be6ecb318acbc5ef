#!/usr/bin/env bash
# On the workstation: compress to INT8 (explicit Q/DQ), deploy for a Jetson profile, check what the
# device will build, and pack the bundle for copying. TensorRT is NOT needed here.
#   MODEL=hub_folder TRAIN=train_folder TARGET=jetson-orin-nano OUT=runs/jetson ./workstation.sh
set -euo pipefail
DATA=${EDGEFG_DATA:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data}
MODEL=${MODEL:-$DATA/models/mobilenetv2_cub100}
TRAIN=${TRAIN:-$DATA/cub100/train}
TEST=${TEST:-$DATA/cub100/test}
TARGET=${TARGET:-jetson-orin-nano}
OUT=${OUT:-runs/jetson_deploy}
CALIB=${CALIB:-300}
EDGEFG=${EDGEFG:-edgefg}

$EDGEFG compress "$MODEL" --recipe fp32 --data "$TRAIN" --val-data "$TEST" --calib-size "$CALIB" -o "$OUT/art-fp32" --force
$EDGEFG compress "$MODEL" --recipe int8 --data "$TRAIN" --val-data "$TEST" --calib-size "$CALIB" -o "$OUT/art-int8" --force
# INT8 as TensorRT explicit quantization: symmetric int8 Q/DQ, static batch, linted for the profile's TensorRT
$EDGEFG deploy "$OUT/art-int8" --target "$TARGET" --data "$TRAIN" -o "$OUT/bundle-$TARGET-int8" --force
# accuracy of the exact ONNX the engine will be built from (ONNX Runtime stands in for TensorRT here)
$EDGEFG compare "$OUT/art-fp32" "$OUT/bundle-$TARGET-int8" --data "$TEST" --stand-in ${MAX_IMAGES:+--max-images $MAX_IMAGES} || true
# what the device will do (settings + the equivalent trtexec command); builds nothing
$EDGEFG build-engine "$OUT/bundle-$TARGET-int8" --dry-run
tar -C "$OUT" -czf "$OUT/bundle-$TARGET-int8.tgz" "bundle-$TARGET-int8"
echo "copy $OUT/bundle-$TARGET-int8.tgz to the Jetson and run device.sh there"
