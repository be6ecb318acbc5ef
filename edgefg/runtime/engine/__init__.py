"""A bundle ready to score frames: the verified bundle and its backend (:mod:`.bundle`), the preprocessing and
postprocessing it was measured with, the timing helper every latency figure uses, image-size limits and the
enrolled-class head. No capture, no loop, no outputs."""
