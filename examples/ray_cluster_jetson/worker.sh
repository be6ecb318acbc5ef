#!/usr/bin/env bash
# Jetson: join the workstation's Ray cluster as the jetson-orin-nano device node (runtime only, no torch).
# docs-test: skip (runs on the Jetson and joins a head over the network; tests/tune/test_ray.py runs edgefg worker for real)
set -euo pipefail
HEAD=${1:?usage: worker.sh HEAD_IP:PORT [TARGET]}
TARGET=${2:-jetson-orin-nano}
VENV=${VENV:-$HOME/edgefg-venv}
RAY_VERSION=${RAY_VERSION:?set RAY_VERSION to the exact Ray version of the head}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"   # JetPack's tensorrt module stays importable
  "$VENV/bin/pip" install -q "edgefg[runtime-tensorrt,runtime-onnxruntime]" "ray==$RAY_VERSION"
fi
exec "$VENV/bin/edgefg" worker --address "$HEAD" --target "$TARGET"
