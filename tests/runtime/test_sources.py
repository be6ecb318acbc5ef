"""Source selection from --source, GStreamer guidance, and ArraySource."""
import json
import shutil

import numpy as np
import pytest

from edgefg.errors import InputPathError, SourceError, UnsupportedError
from edgefg.runtime.capture.sources import ArraySource, ImageListSource, VideoSource, gst_pipeline_for_bundle, gstreamer_available, jetson_gst_pipeline, open_source
from tests.runtime.fakes import write_video


def test_open_source_kinds(tmp_path, image_folder):
    video = write_video(tmp_path / "v.avi", n=5, fourcc="MJPG")
    v = open_source(video)
    assert isinstance(v, VideoSource) and not v.live and v.frame_count == 5 and len(list(v)) == 5
    v.close()
    folder = open_source(str(image_folder))
    assert isinstance(folder, ImageListSource) and len(folder.paths) == 18
    assert len(open_source(str(image_folder / "*" / "00[01].jpg")).paths) == 6
    with pytest.raises(InputPathError):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputPathError):
        open_source(str(tmp_path / "*.png"))


def test_unreachable_live_sources_raise_source_error():
    with pytest.raises(SourceError, match="camera"):
        open_source("/dev/video97")
    with pytest.raises(SourceError, match="url"):
        open_source("http://127.0.0.1:9/none.mjpg", open_timeout_s=1, read_timeout_s=1)  # port 9: nothing listens


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer")
def test_gst_source_without_gstreamer_says_what_to_do():
    with pytest.raises(UnsupportedError, match="GStreamer") as info:
        open_source("gst:videotestsrc ! appsink")
    assert "JetPack" in info.value.hint


def test_print_gst_pipeline_for_jetson_bundle(tiny_bundles, tmp_path):
    b = tmp_path / "jetson"
    shutil.copytree(tiny_bundles["fp32-intel-cpu"], b)
    m = json.loads((b / "manifest.json").read_text())
    m["target"] = "jetson-orin-nano"
    (b / "manifest.json").write_text(json.dumps(m))
    text = gst_pipeline_for_bundle(b)
    assert "nvarguscamerasrc" in text and "appsink" in text and "--source 'gst:" in text
    assert "v4l2src" in gst_pipeline_for_bundle(tiny_bundles["fp32-intel-cpu"])
    assert jetson_gst_pipeline(width=1280, height=720, fps=60).count("width=1280") == 1


def test_array_source_is_not_reopened():
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    src = ArraySource(frames)
    assert [f.index for f in src] == [0, 1, 2] and not src.reopenable
