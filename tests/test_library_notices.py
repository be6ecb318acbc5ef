"""torch's false 'No CUDA runtime' notice is dropped for Python API users; nothing else is."""
import logging
import os
import subprocess
import sys

import pytest

import edgefg  # noqa: F401  (attaches the filter)

IMPORT_NNCF_TORCH = "import nncf.torch"


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())


def test_only_the_false_notice_is_dropped():
    logger = logging.getLogger("torch.utils.cpp_extension")
    keep = _Keep()
    level, disabled = logger.level, logger.disabled  # the CLI's setup (run by other tests) quiets torch's loggers
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    logger.addHandler(keep)
    try:
        logger.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
        logger.warning("Error building extension 'x'")
        logging.getLogger("torch").warning("No CUDA runtime is found (another logger: kept)")
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
        logger.disabled = disabled
    assert keep.records == ["Error building extension 'x'"]


def _stderr(code: str) -> str:
    from edgefg.cli import QUIET_NATIVE_ENV

    env = {k: v for k, v in os.environ.items() if k not in QUIET_NATIVE_ENV}  # the CLI's setup (other tests) sets TORCH_LOGS here
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env).stderr


def test_python_api_users_do_not_see_it_when_nncf_loads_torch_extensions():
    plain = _stderr(IMPORT_NNCF_TORCH)
    if "No CUDA runtime is found" not in plain:
        pytest.skip("torch does not log the notice on this machine (a CUDA runtime is installed)")
    with_edgefg = _stderr("import edgefg; " + IMPORT_NNCF_TORCH)
    assert "No CUDA runtime is found" not in with_edgefg, with_edgefg
