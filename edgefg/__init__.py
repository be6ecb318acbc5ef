"""edgefg — fine-grained image classifiers from PyTorch to field cameras."""
from edgefg.library_notices import drop_false_notices as _drop_false_notices

__version__ = "0.1.0"
_drop_false_notices()
