#!/bin/bash
# Carried to the GPU machine with .gpu/ (made by `python benchmarks/cnn_recovery.py prepare [--base-from PACK]`):
#   run(command="bash benchmarks/cnn_recovery_gpu.sh", carry=[".gpu"]) — env: RUN, JOBS (+ JOBS2=1 to use only JOBS), RATIOS (e.g. 0.2,0.25), EPOCHS, BUDGET, TRAIN_TIMEOUT, SKIP_TESTS
# GPU run of session 5: pruning recovery with many KD epochs, images decoded once and augmented on the GPU.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl || exit 3
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi -L; nproc
[ -n "$SKIP_TESTS" ] || timeout 70 python3 -m pytest -q -p no:cacheprovider tests/compress/test_device_data.py tests/compress/test_train_prune.py -k "cuda" 2>&1 | tail -5
[ -n "$SKIP_TESTS" ] || [ "${PIPESTATUS[0]}" = 0 ] || { echo "CUDA tests failed: stop"; exit 4; }
[ -n "$JOBS" ] || JOBS='efficientnet_lite0/prune0.2,mobilenetv2_cub100/prune0.2,efficientnet_lite0/prune0.1,mobilenetv2_cub100/prune0.1'
[ -n "$JOBS2" ] || JOBS+=',efficientnet_lite0/prune0.2-global,mobilenetv2_cub100/prune0.2-global,efficientnet_lite0/prune0.3,mobilenetv2_cub100/prune0.3'
[ -n "$JOBS2" ] || JOBS+=',mobilenetv2_cub100/prune0.4,efficientnet_lite0/prune0.4,mobilenetv2_cub100/prune0.5,efficientnet_lite0/prune0.5'
timeout ${TRAIN_TIMEOUT:-520} python3 benchmarks/cnn_recovery.py train --out /tmp/${RUN:-gpu3} --device cuda --base-from .gpu/base --jobs "$JOBS" ${RATIOS:+--ratios $RATIOS} \
  --greedy --prune-epochs ${EPOCHS:-40} --batch 128 --budget-s ${BUDGET:-450} --sec-per-epoch 1.0 --workers 16 2>&1 \
  | grep --line-buffered -v "it/s\]\|s/it\]\|elapsed, ETA" | tee $OUT/log.txt
rm -f /tmp/${RUN:-gpu3}/efficientnet_lite0_cub100.safetensors  # the base came from the earlier run: not returned again
python3 benchmarks/cnn_recovery.py pack --out /tmp/${RUN:-gpu3} --pack-to $OUT/${RUN:-gpu3} 2>&1 | tail -2
cp $OUT/log.txt $OUT/${RUN:-gpu3}/ 2>/dev/null; ls -la $OUT/${RUN:-gpu3}
