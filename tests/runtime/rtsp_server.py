"""A real RTSP server for the tests: GStreamer's gst-rtsp-server (system python3 + gi) serving a moving
test pattern as RTP/JPEG at rtsp://127.0.0.1:PORT/test. Run with the system python3:

    /usr/bin/python3 tests/runtime/rtsp_server.py PORT
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=160,height=120,framerate=25/1 "
            "! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )")


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {sys.argv[1]}")
    print(f"rtsp://127.0.0.1:{sys.argv[1]}/test", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
