"""Compression: the step registry (``steps.py``), recipes, and the compress loop (``api.py``)."""

ILA_DEFAULT_AT = (3, 7)  # 0-based ViT blocks followed by an ILA adapter (the ILA paper's 12-block setting)
