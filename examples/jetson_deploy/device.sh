#!/usr/bin/env bash
# On the Jetson (JetPack 6: TensorRT 10 and its Python bindings come with JetPack, not from PyPI).
# docs-test: skip (runs on the Jetson: JetPack's TensorRT, a GPU and a camera)
set -euo pipefail
BUNDLE_TGZ=${1:?usage: device.sh bundle.tgz}
# once: a venv that sees JetPack's tensorrt module, plus the runtime (no torch)
python3 -m venv --system-site-packages ~/edgefg-venv
~/edgefg-venv/bin/pip install 'edgefg[runtime-tensorrt]'
mkdir -p ~/models && tar -C ~/models -xzf "$BUNDLE_TGZ"
BUNDLE=~/models/$(basename "$BUNDLE_TGZ" .tgz)
# build the engine on the device (cached, keyed by TensorRT version + SM + L4T + model sha256 + precision)
~/edgefg-venv/bin/edgefg build-engine "$BUNDLE"
# CSI camera through GStreamer (nvarguscamerasrc); USB cameras: --source 0
~/edgefg-venv/bin/edgefg run "$BUNDLE" --source 0 --smooth ema:0.6 --min-confidence 0.5 --http 0.0.0.0:8080
