"""edgefg — fine-grained image classifiers from PyTorch to field cameras."""
__version__ = "0.1.0"
