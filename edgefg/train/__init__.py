"""``edgefg train``: a classifier for your classes from a pretrained backbone (linear probe or fine-tune)."""
from edgefg.train.api import TrainOptions, train_classifier

__all__ = ["TrainOptions", "train_classifier"]
