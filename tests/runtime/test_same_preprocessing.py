"""The runtime's frame preprocessing is the very function validation and calibration use."""
import numpy as np

from edgefg.calibration.dataset import iter_batches, scan
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.serve import stream


def test_runtime_inputs_equal_validation_inputs(tiny_bundles, image_folder, monkeypatch):
    bundle = LoadedBundle(tiny_bundles["fp32-onnxruntime-cpu"])
    seen = []
    real = bundle.scores
    monkeypatch.setattr(bundle, "scores", lambda x: (seen.append(x.copy()), real(x))[1])
    results = list(stream(bundle, str(image_folder)))
    data = scan(image_folder, bundle.labels)
    expected = np.concatenate([b.x for b in iter_batches(data.samples, bundle.manifest.preprocess, 4)])
    assert len(results) == len(expected) == 18
    np.testing.assert_array_equal(np.concatenate(seen), expected)
