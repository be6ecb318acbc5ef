"""The on-device runtime: numpy, OpenCV and one backend; never torch."""
