"""Fixtures shared by the runtime tests."""
import pytest


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    """The tiny FP32 bundle for the Intel CPU profile: what the pipeline tests run."""
    return tiny_bundles["fp32-intel-cpu"]
