"""TensorRT on the device: engine builder (``edgefg build-engine``) and the engine cache.

An engine is valid only for the TensorRT version, GPU and JetPack that built it, so engines are
built on the device from the bundle's ONNX and cached under a key of exactly those things plus the
model's sha256 and the build precision; the runtime loads only an engine whose key matches. Nothing
here imports ``tensorrt`` or ``pycuda`` at module level.
"""
