"""The user's images: the ImageFolder reader and the stratified sampling every stage uses.

:mod:`edgefg.calibration.dataset` reads a folder of images (one sub-folder per class, matched to the
model's labels by name), picks the stratified calibration subset (``stratified_subset``: ``compress``
and ``deploy --calib-size`` take the same images the same way) and prepares batches with the one
preprocessing function — for calibration, training, validation, parity checks and ``compare``.

The package is named after its first user. The calibration *algorithms* are not here: they belong to
the quantizer that runs them — NNCF post-training quantization (and its accuracy control) in
:mod:`edgefg.compress.quantize`, LiteRT's PT2E INT8 observers in :mod:`edgefg.converters.onnx_to_tflite`,
TensorRT's INT8 ranges taken from the artifact's Q/DQ scales in :mod:`edgefg.tensorrt.qdq` — and each of
them is fed the images this package selects.
"""
